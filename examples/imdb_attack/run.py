"""Table 3 on real IMDB reviews: how much accuracy each model loses to BERT-Attack.

    .venv/bin/python examples/imdb_attack/run.py [--out /tmp/imdb-attack] [--examples 25]

Builds the models of build.py once (about 3 minutes on 2 cores), then attacks the first
``--examples`` (default 15) of the 200 held-out reviews on every model. Outcomes are cached under --out,
so a second run attacks nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from build import build  # noqa: E402

from miniature import Session, Settings, attack_robustness  # noqa: E402
from miniature.report.terminal import summary  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/imdb-attack"))
    parser.add_argument("--examples", type=int, default=15)
    parser.add_argument("--max-candidates", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()
    specs = build(args.out)
    settings = Settings(
        cache_dir=args.out / "cache", max_length=args.max_length, models=specs,  # the names are aliases
        attack={"model": specs["masked-lm"], "examples": args.examples, "max_candidates": args.max_candidates},
    )
    runner = Session(settings, progress=lambda line: print(line, flush=True))
    attack_set = runner.dataset(specs["attack-set"])
    reference = runner.model("minilm-imdb")
    start = time.perf_counter()
    for name in ("torch-int8", "onnx-int8", "dropped-3l"):
        attack_robustness(reference, runner.model(name), attack_set)
    for line in summary(runner.results):
        print(line)
    stats = runner.stats
    print(f"{stats.attacked} examples attacked in {stats.seconds_attacking:.0f}s, {stats.attacks_from_cache} outcomes "
          f"from cache; {time.perf_counter() - start:.0f}s in all")


if __name__ == "__main__":
    main()
