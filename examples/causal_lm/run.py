"""The causal-LM gate on a tiny Llama-style model and three compressed versions of it, through pytest.

Built here, offline, from ../shared/data: a byte-level BPE tokenizer (1,000 tokens) and a 2-layer,
64-wide LlamaForCausalLM trained 400 steps on IMDB training reviews and SST-2 sentences written as
``Review: <sentence> Sentiment: positive`` (dev rows 200 on). Candidates, made with the recipes of
miniature.compress: torch dynamic int8 on load, ONNX export + onnxruntime dynamic int8, and layer
dropping (layer 0 of 2 kept, no retraining). The project it writes gates, with ``task = "causal-lm"``,
on the first 200 SST-2 dev sentences as multiple choice (" negative" / " positive"): token-level KL
and top-1 agreement over every position of the prompts, error Jaccard of the picked choices, and
KNN agreement of mean-pooled embeddings; then it runs pytest on it.

Run from the repository root:  .venv/bin/python examples/causal_lm/run.py --out /tmp/causal-lm
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[2]
PROMPT = "Review: {} Sentiment:"
CHOICES = [" negative", " positive"]


def build(out: Path, data: Path) -> None:
    import torch

    from miniature.compress import drop_layers, export_onnx, quantize_onnx, quantize_torch
    from miniature.tiny_lm import build_tiny_lm

    torch.set_num_threads(1)  # tiny matrices: a second thread only waits (and on 2 busy cores, much slower)
    with open(data / "sst2" / "dev.tsv", encoding="utf-8") as handle:
        rows = [(r["sentence"].strip(), r["label"]) for r in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)]
    with open(data / "imdb_cad" / "orig_train.tsv", encoding="utf-8") as handle:
        reviews = [r["Text"] for r in csv.DictReader(handle, delimiter="\t")]
    training = reviews + [PROMPT.format(t) + CHOICES[int(y)] for t, y in rows[200:]] * 2
    reference = build_tiny_lm(out / "llama", training, style="llama", vocab_size=1000, width=64, context=128, steps=400)
    quantize_torch(reference, out / "llama-torch-int8")
    quantize_onnx(export_onnx(reference, out / "llama-onnx"), out / "llama-onnx-int8", source=reference)
    drop_layers(reference, out / "llama-1-layer", keep_every=2)
    with open(out / "sst2-choices.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["context", "choices", "label"],
                                      *([PROMPT.format(t), json.dumps(CHOICES), y] for t, y in rows[:200])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/miniature-causal-lm", help="where the models, project and cache go")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    args = parser.parse_args()
    out, data = Path(args.out).resolve(), Path(args.data).resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if not (out / "llama-1-layer" / "config.json").exists():
        build(out, data)
    print(f"models ready in {time.perf_counter() - start:.0f}s under {out}")
    project = out / "project"
    project.mkdir(exist_ok=True)
    (project / "pyproject.toml").write_text(f"""\
[tool.miniature]
task = "causal-lm"
reference = "llama"
candidates = ["torch-int8", "onnx-int8", "1-layer"]
eval = "{out / 'sst2-choices.csv'}"
max_length = 128

[tool.miniature.models]
llama = "{out / 'llama'}"
torch-int8 = "{out / 'llama-torch-int8'}"
onnx-int8 = "onnx:{out / 'llama-onnx-int8' / 'model.onnx'}"
1-layer = "{out / 'llama-1-layer'}"

[tool.miniature.thresholds]
kl_divergence = 0.01
top1_agreement = 0.9
error_jaccard = 0.5
knn_agreement = {{ min = 0.3, k = 10 }}
""")
    began = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "pyproject.toml", "-q"],
                            cwd=project)
    print(f"gate: exit status {result.returncode} in {time.perf_counter() - began:.0f}s; "
          f"{time.perf_counter() - start:.0f}s in all")


if __name__ == "__main__":
    main()
