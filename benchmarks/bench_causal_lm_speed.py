"""Causal-LM pair statistics against a naive loop, and a warm gate against importing the package: ratios from one run.

    .venv/bin/python benchmarks/bench_causal_lm_speed.py [--repeats 3] [--texts 24]

The shape of issue #25: a randomly initialised Llama (6 layers, hidden 512, a 32,000-token output
layer, 256 positions) against its 5-layer copy, on IMDB reviews of at least 256 tokens cut to 256
(one window each; the tokenizer is a 2,000-token byte-level BPE trained on the reviews: the output
layer's width, not the tokenizer's, is what costs). Each command runs in its own process, end to end
(imports, loading, the pass, the figures), measured by wall time and the process's peak RSS:

- ``miniature compare --task causal-lm --checks kl_divergence,top1_agreement --no-cache``;
- the naive loop: transformers, one text at a time, float32 log-softmax and KL in torch;
- llama.cpp's ``llama-perplexity --kl-divergence``, when it is on the PATH (it is not installed here);
- the warm gate: the same ``compare`` with every output in the cache, against ``python -c "import miniature"``.

Repeats are interleaved (project, naive, project, naive, ...) and the medians compared. Both must give
the same figures (the project's float64 against the loop's float32): the script prints both.

Measured here (2 cores, AMD EPYC, a quiet machine), ``--repeats 3``::

    shape: Llama 6 layers x 512 against its 5-layer copy, output layer 32000, 6120 positions in 24 texts; medians of 3 interleaved runs
    run                                   seconds  peak RSS MB
    miniature compare (KL, top-1)           14.63         1154
    naive float32 loop                      14.42         1134
    speed: project 0.99x the naive loop's; memory: 1.02x the loop's
    the loop without its statistics (start-up, imports, loading, forward passes): 13.57 s, so a tool running the same torch forward passes is at most 1.06x the loop's speed
    same figures: KL 0.0248855 against 0.0248855 (relative gap 8.3e-09), top-1 0.2098 against 0.2098
    llama.cpp's llama-perplexity: not installed here
    warm gate (every output cached): 1.05 s; python -c 'import miniature': 0.10 s (10.1x)

docs/causal-lm.md says where the time goes.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

#: Runs a command and prints its peak RSS in MB (Linux reports ru_maxrss in kB).
MEASURE = "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); " \
          "print('peak_rss_mb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024); sys.exit(code)"

NAIVE = '''
import time
import csv, json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
reference, candidate, texts, window = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
tokenizer = AutoTokenizer.from_pretrained(reference)
models = [AutoModelForCausalLM.from_pretrained(m).eval() for m in (reference, candidate)]
rows = [r["text"] for r in csv.DictReader(open(texts, encoding="utf-8"))]
kl_sum, same, positions, statistics_s = 0.0, 0, 0, 0.0
with torch.inference_mode():
    for text in rows:
        ids = torch.tensor([tokenizer(text, truncation=True, max_length=window)["input_ids"]])
        logits = [m(input_ids=ids).logits[0, :-1].float() for m in models]
        start = time.perf_counter()
        log_p, log_q = (torch.log_softmax(z, dim=-1) for z in logits)
        kl_sum += float((log_p.exp() * (log_p - log_q)).sum(-1).clamp_min(0).sum())
        same += int((log_p.argmax(-1) == log_q.argmax(-1)).sum())
        positions += log_p.shape[0]
        statistics_s += time.perf_counter() - start
print(json.dumps({"kl": kl_sum / positions, "top1": same / positions, "positions": positions,
                  "statistics_s": statistics_s}))
'''


def build(out: Path, data: Path, texts: int, vocabulary: int) -> tuple[Path, Path, Path]:
    """The reference, its 5-layer copy and the reviews, written once into ``out``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from miniature.tiny_lm import train_tokenizer

    reference, candidate, reviews = out / "reference", out / "candidate", out / "reviews.csv"
    if reviews.is_file():
        return reference, candidate, reviews
    with open(data / "imdb_cad" / "orig_train.tsv", encoding="utf-8") as handle:
        corpus = [r["Text"] for r in csv.DictReader(handle, delimiter="\t")]
    tokenizer = train_tokenizer(corpus, reference, vocab_size=2000, bos=False)
    long = [t for t in corpus if len(tokenizer(t)["input_ids"]) >= 256][:texts]
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocabulary, hidden_size=512, intermediate_size=1376, num_hidden_layers=6,
                         num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=256,
                         bos_token_id=0, eos_token_id=0, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(reference)
    model.model.layers = model.model.layers[:5]
    model.config.num_hidden_layers = 5
    model.save_pretrained(candidate)
    tokenizer.save_pretrained(candidate)
    with open(reviews, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["text"], *([t] for t in long)])
    return reference, candidate, reviews


def measured(command: list[str], cwd: Path) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB, stdout) of ``command`` in a process of its own."""
    start = time.perf_counter()
    done = subprocess.run([PYTHON, "-c", MEASURE, *command], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    lines = done.stdout.splitlines()
    return seconds, float(lines[-1].split()[1]), "\n".join(lines[:-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--texts", type=int, default=24)
    parser.add_argument("--vocabulary", type=int, default=32_000)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "miniature-bench-causal-speed")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("MINIATURE_SHARED_DATA", REPO.parent / "shared" / "data")))
    args = parser.parse_args()
    reference, candidate, reviews = build(args.out, args.data, args.texts, args.vocabulary)
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    gate = [PYTHON, "-m", "miniature.cli", "compare", "--task", "causal-lm", "--reference", str(reference),
            "--candidate", str(candidate), "--eval", str(reviews), "--max-length", "256",
            "--checks", "kl_divergence,top1_agreement"]
    runs: dict[str, list[tuple[float, float]]] = {"project": [], "naive": [], "floor": []}
    figures = {}
    for _ in range(args.repeats):
        seconds, rss, _ = measured([*gate, "--no-cache", "--report", "r.json"], work)
        runs["project"].append((seconds, rss))
        report = json.loads((work / "r.json").read_text())
        figures["project"] = {r["metric"]: r["value"] for r in report["results"]}
        seconds, rss, out = measured([PYTHON, "-c", NAIVE, str(reference), str(candidate), str(reviews), "256"], work)
        runs["naive"].append((seconds, rss))
        figures["naive"] = json.loads(out)
        # The floor of any tool on the same kernels: the loop's process less its statistics (start-up, imports,
        # loading and the float32 forward passes, which the project runs too).
        runs["floor"].append((seconds - figures["naive"]["statistics_s"], 0.0))
    llama_cpp = shutil.which("llama-perplexity")
    # The warm gate: every output cached by a first run, then timed against importing the package alone.
    subprocess.run([*gate, "--cache-dir", "cache"], capture_output=True, cwd=work, check=True)
    warm = [measured([*gate, "--cache-dir", "cache"], work)[0] for _ in range(args.repeats)]
    bare = [measured([PYTHON, "-c", "import miniature"], work)[0] for _ in range(args.repeats)]
    median = {name: (statistics.median(s for s, _ in r), statistics.median(m for _, m in r)) for name, r in runs.items()}
    (project_s, project_mb), (naive_s, naive_mb) = median["project"], median["naive"]
    kl_gap = abs(figures["project"]["kl_divergence"] - figures["naive"]["kl"]) / figures["naive"]["kl"]
    print(f"shape: Llama 6 layers x 512 against its 5-layer copy, output layer {args.vocabulary}, "
          f"{figures['naive']['positions']} positions in {args.texts} texts; medians of {args.repeats} interleaved runs")
    print(f"{'run':36} {'seconds':>8} {'peak RSS MB':>12}")
    print(f"{'miniature compare (KL, top-1)':36} {project_s:8.2f} {project_mb:12.0f}")
    print(f"{'naive float32 loop':36} {naive_s:8.2f} {naive_mb:12.0f}")
    print(f"speed: project {naive_s / project_s:.2f}x the naive loop's; memory: {project_mb / naive_mb:.2f}x the loop's")
    floor_s = median["floor"][0]
    print(f"the loop without its statistics (start-up, imports, loading, forward passes): {floor_s:.2f} s, so a tool "
          f"running the same torch forward passes is at most {naive_s / floor_s:.2f}x the loop's speed")
    print(f"same figures: KL {figures['project']['kl_divergence']:.6g} against {figures['naive']['kl']:.6g} "
          f"(relative gap {kl_gap:.1e}), top-1 {figures['project']['top1_agreement']:.4f} against {figures['naive']['top1']:.4f}")
    print(f"llama.cpp's llama-perplexity: {'found at ' + llama_cpp + ' (not run: build its GGUF files first)' if llama_cpp else 'not installed here'}")
    print(f"warm gate (every output cached): {statistics.median(warm):.2f} s; python -c 'import miniature': "
          f"{statistics.median(bare):.2f} s ({statistics.median(warm) / statistics.median(bare):.1f}x)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
