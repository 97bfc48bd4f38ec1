"""Peak memory and time of the causal-LM output agreement: 1,000 texts of 256 tokens, a 32k vocabulary.

Run: .venv/bin/python benchmarks/bench_causal_lm_memory.py [--sizes 250 1000] [--vocabulary 32000]

A tiny GPT-2-style model (2 layers, 32 wide, 256 positions) with an output layer over 32,000 tokens,
against a copy with its second layer dropped, on IMDB reviews cut to 256 tokens. For each n, in one
process: ``kl_divergence`` (both models streamed side by side) and then the reference's own outputs
(per-token log-probabilities, top tokens, embeddings). Memory: the peak of Python allocations
(tracemalloc, which sees numpy's arrays; torch's tensors are outside it) and the process's peak RSS
(which only grows, so each n's RSS is the peak so far). The full logits of one model at n = 1,000
would be n x 255 x 32,000 float32 = 32.6 GB: neither figure may grow with n.

Measured here, 2026-11-26, with ``PYTHONPATH=src:plugin .venv/bin/python benchmarks/bench_causal_lm_memory.py``
(2 CPU cores, shared with another engineer's test runs at a load of about 3; one torch thread; batch_size 8)::

    vocabulary 32000, texts of 256 tokens, batch_size 8
    n=  250 (63740 positions): KL 0.00031, top-1 0.6712; side by side 56.6 s, tracemalloc peak 105 MB;
        reference alone 24.1 s, peak 73 MB; process peak RSS so far 1686 MB (one model's full logits: 8.2 GB)
    n= 1000 (254977 positions): KL 0.00031, top-1 0.6729; side by side 205.5 s, tracemalloc peak 120 MB;
        reference alone 66.9 s, peak 91 MB; process peak RSS so far 1747 MB (one model's full logits: 32.6 GB)

Four times the texts: 4 times the positions, 3.6 times the time, and 15 MB more Python memory (the
kept per-position statistics, about 25 bytes a position, and each model's (n, 255) arrays); the
process's peak RSS grew by 61 MB (4%), against the 24 GB more that one model's full logits would
take. The RSS is mostly torch and one batch of logits per model: 8 x 256 x 32,000 float32 = 262 MB
each, with the output layer's intermediate copies (it scales with batch_size, not with n).
"""

from __future__ import annotations

import argparse
import csv
import resource
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[250, 1000])
    parser.add_argument("--vocabulary", type=int, default=32_000)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", default="/tmp/miniature-bench-causal")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    args = parser.parse_args()
    import torch

    from miniature import Session, Settings, kl_divergence
    from miniature.compress import drop_layers
    from miniature.tiny_lm import make_model, train_tokenizer

    torch.set_num_threads(1)
    out, data = Path(args.out), Path(args.data)
    with open(data / "imdb_cad" / "orig_train.tsv", encoding="utf-8") as handle:
        reviews = [r["Text"] for r in csv.DictReader(handle, delimiter="\t")]
    tokenizer = train_tokenizer(reviews, out / "reference", vocab_size=2000, bos=False)
    # Texts of exactly ``tokens`` tokens: reviews run together, cut at token boundaries.
    stream = [t for review in reviews for t in tokenizer(review)["input_ids"]]
    texts = [tokenizer.decode(stream[i * args.tokens:(i + 1) * args.tokens]) for i in range(max(args.sizes))]
    make_model("gpt2", args.vocabulary, context=args.tokens).save_pretrained(out / "reference")
    drop_layers(out / "reference", out / "candidate", keep_every=2)
    print(f"vocabulary {args.vocabulary}, texts of {args.tokens} tokens, batch_size {args.batch_size}")
    for n in args.sizes:
        path = out / f"texts-{n}.csv"
        with open(path, "w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows([["text"], *([t] for t in texts[:n])])
        runner = Session(Settings(cache_dir=None, task="causal-lm", max_length=args.tokens, batch_size=args.batch_size))
        eval_set = runner.dataset(str(path))
        reference, candidate = runner.model(str(out / "reference")), runner.model(str(out / "candidate"))
        tracemalloc.start()
        start = time.perf_counter()
        kl = kl_divergence(reference, candidate, eval_set, resamples=0)
        pair_seconds = time.perf_counter() - start
        pair_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        start = time.perf_counter()
        reference.outputs(eval_set)
        own_seconds = time.perf_counter() - start
        own_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        full = n * (args.tokens - 1) * args.vocabulary * 4 / 1e9
        print(f"n={n:>5} ({kl.tokens} positions): KL {float(kl):.5f}, top-1 {kl.top1_agreement:.4f}; side by side "
              f"{pair_seconds:.1f} s, tracemalloc peak {pair_peak / 1e6:.0f} MB; reference alone {own_seconds:.1f} s, "
              f"peak {own_peak / 1e6:.0f} MB; process peak RSS so far {rss:.0f} MB (one model's full logits: {full:.1f} GB)")


if __name__ == "__main__":
    main()
