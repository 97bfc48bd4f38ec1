"""Time the KNN agreement (n = 10,000, d = 384, K = 10) and Deep-NN OOD scoring (25,000-point bank).

Run: .venv/bin/python benchmarks/bench_neighbours.py [--repeat 3]
Prints seconds per step and the throughput; targets from issue 3: KNN agreement < 5 s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from miniature import compare_neighbourhoods, detect_ood, nearest_others, neighbour_jaccard


def best_of(repeat: int, fn):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return min(times), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--bank", type=int, default=25_000)
    parser.add_argument("--challenge", type=int, default=2_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"cores: {os.cpu_count()}; best of {args.repeat}")

    # Two "models": the second embedding is a noisy view of the first, as a compressed model's is.
    ref = rng.normal(size=(args.n, args.dim)).astype(np.float32)
    cand = (ref + 0.8 * rng.normal(size=ref.shape)).astype(np.float32)
    ids = [str(i) for i in range(args.n)]

    search, nn = best_of(args.repeat, lambda: nearest_others(ref, 10))
    jac, _ = best_of(args.repeat, lambda: neighbour_jaccard(nn, nearest_others(cand, 10)[:, :10]))
    jac_only, _ = best_of(args.repeat, lambda: neighbour_jaccard(nn, nn[::-1].copy()))
    total, result = best_of(args.repeat, lambda: compare_neighbourhoods(ids, ref, cand, ks=(10,))[10])
    sweep, _ = best_of(args.repeat, lambda: compare_neighbourhoods(ids, ref, cand, ks=(5, 10, 20, 50, 100)))
    print(f"KNN agreement n={args.n} d={args.dim} K=10: {total:.2f} s in all (target < 5 s): "
          f"{search:.2f} s per exact FAISS search, {jac_only * 1000:.1f} ms for the vectorised Jaccard; "
          f"mean {float(result):.4f}")
    print(f"KNN agreement with the K sweep 5,10,20,50,100 (one search at K=100): {sweep:.2f} s")

    bank = rng.normal(size=(args.bank, args.dim)).astype(np.float32)
    val = rng.normal(size=(args.bank // 10, args.dim)).astype(np.float32)
    challenge = rng.normal(size=(args.challenge, args.dim)).astype(np.float32)
    cids = [str(i) for i in range(args.challenge)]
    dnn, detection = best_of(args.repeat, lambda: detect_ood(cids, bank=bank, validation=val, challenge=challenge, ks=(10,)))
    queries = len(val) + args.challenge
    print(f"Deep-NN OOD, bank={args.bank} d={args.dim} k=10, {len(val)} validation + {args.challenge} challenge "
          f"queries: {dnn:.2f} s per model ({queries / dnn:,.0f} queries/s); flagged {len(detection[10].flagged)}")


if __name__ == "__main__":
    main()
