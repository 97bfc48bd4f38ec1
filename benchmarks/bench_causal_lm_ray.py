"""Causal-LM pairs and greedy continuations: the local engine against the Ray engine with two actors, as ratios.

    .venv/bin/python benchmarks/bench_causal_lm_ray.py [--texts 24] [--prompts 12] [--new-tokens 16]

The shape of bench_causal_lm_speed.py (a random 6-layer Llama, hidden 512, a 32,000-token output layer,
against its 5-layer copy; IMDB reviews cut to 256 tokens), built there once. In one process, each figure
timed from a fresh session with no cache:

- the pair's statistics (KL, top-1) over the reviews: ``kl_divergence``; on Ray, actors that each hold both
  models compute shards of the local engine's batches;
- greedy continuations of ``--prompts`` reviews cut to 32 tokens, ``--new-tokens`` each, by both models and
  the candidate's teacher-forced pass along the reference's: ``generation_agreement``; on Ray, shards of
  prompts go to actors that each hold one model.

The local engine uses both cores in one process; Ray, two actors of one core each on a local Ray of 2 CPUs,
their start-up (a process that imports torch and loads the models) inside the figures. Both must give the
same figures: the script checks, and says so.

Measured here (2 cores, AMD EPYC, a quiet machine), with the defaults::

    work                local s    ray s  ray/local
    pair statistics       10.31    14.83      1.44x
    continuations         20.09    30.53      1.52x
    identical figures: True (KL 0.0248855, generation agreement 0.0000)

On two cores Ray can only lose: the same two cores, one thread per actor against the local engine's two,
and each actor's start-up. (The generation agreement is 0: the models are random, and a random 6-layer
Llama's 5-layer copy writes other tokens from the first.) On a cluster, the actors are as many as its CPUs
or GPUs, and each holds its models once for all its shards.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=24)
    parser.add_argument("--prompts", type=int, default=12)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "miniature-bench-causal-speed")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("MINIATURE_SHARED_DATA", REPO.parent / "shared" / "data")))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ray
    from bench_causal_lm_speed import build

    from miniature import Session, Settings, generation_agreement, kl_divergence

    reference, candidate, reviews = build(args.out, args.data, args.texts, 32_000)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    figures, seconds = {}, {}
    for engine in ("local", "ray"):
        settings = dict(engine=engine, workers=2, cache_dir=None, task="causal-lm", max_length=256)
        session = Session(Settings(**settings), live=False)
        data = session.dataset(str(reviews))
        start = time.perf_counter()
        kl = kl_divergence(session.model(str(reference)), session.model(str(candidate)), data)
        seconds[engine, "pair statistics"] = time.perf_counter() - start
        session = Session(Settings(**settings), live=False)
        prompts = session.dataset(f"{reviews}[:{args.prompts}]")
        start = time.perf_counter()
        generated = generation_agreement(session.model(str(reference)), session.model(str(candidate)), prompts,
                                         prompt_tokens=32, new_tokens=args.new_tokens)
        seconds[engine, "continuations"] = time.perf_counter() - start
        figures[engine] = (kl.as_dict(), generated.as_dict())
    ray.shutdown()
    print(f"pair statistics over {args.texts} reviews of 256 tokens; continuations of {args.prompts} prompts of 32 "
          f"tokens, {args.new_tokens} new tokens each (both models, and the teacher-forced pass)")
    print(f"{'work':18} {'local s':>8} {'ray s':>8} {'ray/local':>10}")
    for work in ("pair statistics", "continuations"):
        local, remote = seconds["local", work], seconds["ray", work]
        print(f"{work:18} {local:8.2f} {remote:8.2f} {remote / local:9.2f}x")
    print(f"identical figures: {figures['local'] == figures['ray']} (KL {figures['local'][0]['value']:.6g}, "
          f"generation agreement {figures['local'][1]['value']:.4f})")


if __name__ == "__main__":
    main()
