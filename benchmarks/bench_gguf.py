"""GGUF fidelity and speed against llama.cpp's own perplexity tool (#22), on the same tokens and threads.

llama.cpp's ``llama-perplexity`` is built from the source of the installed llama-cpp-python (its sdist vendors
llama.cpp; ``pip download --no-binary``, then cmake, target ``llama-perplexity`` alone) unless ``--perplexity``
names a binary. It runs twice, as its KL mode is used: over the reference with ``--kl-divergence-base`` (it saves the
tokens and the reference's log-probabilities) and over the candidate with ``--kl-divergence``. The project then reads
the very tokens the tool saved, in the tool's chunks of ``--ctx`` tokens, through its own GGUF backend and pair
statistics (both models side by side, float64 KL over the full vocabulary), and the figures are compared on the
positions the tool scores: the second half of each chunk.

Printed: both mean KLs and their relative gap, both "same top" shares, and each side's seconds and tokens/s (every
forward pass of both models; the tool's two processes whole, the project's loading and pair statistics).

    .venv/bin/python benchmarks/bench_gguf.py --reference F16.gguf --candidate Q4_0.gguf [--ctx 512 --chunks 8]
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def perplexity_tool(build_dir: Path) -> Path:
    """llama-perplexity built from the installed llama-cpp-python's own source (once per version)."""
    binding = version("llama-cpp-python")
    binary = build_dir / f"build-{binding}" / "bin" / "llama-perplexity"
    if binary.is_file():
        return binary
    build_dir.mkdir(parents=True, exist_ok=True)
    sdist = build_dir / f"llama_cpp_python-{binding}.tar.gz"
    if not sdist.is_file():
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        f"llama-cpp-python=={binding}", "-d", str(build_dir)], check=True)
    source = build_dir / f"llama_cpp_python-{binding}"
    if not source.is_dir():
        with tarfile.open(sdist) as archive:
            archive.extractall(build_dir, filter="data")
    llama = source / "vendor" / "llama.cpp"
    build = build_dir / f"build-{binding}"
    print(f"building llama-perplexity from {llama} (a few minutes) ...", flush=True)
    subprocess.run(["cmake", "-S", str(llama), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_BUILD_TOOLS=ON",
                    "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_CURL=OFF",
                    "-DLLAMA_OPENSSL=OFF", "-DBUILD_SHARED_LIBS=OFF"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(build), "--target", "llama-perplexity", f"-j{os.cpu_count() or 1}"], check=True,
                   stdout=subprocess.DEVNULL)
    return binary


def read_base_tokens(path: Path) -> tuple[int, list[list[int]]]:
    """(n_ctx, the chunks' token ids) from the header of llama-perplexity's --kl-divergence-base file."""
    with open(path, "rb") as handle:
        if handle.read(8) != b"_logits_":
            raise ValueError(f"{path} is not a llama-perplexity log-probability file")
        n_ctx = int(np.frombuffer(handle.read(4), dtype=np.uint32)[0])
        _, n_chunk = np.frombuffer(handle.read(8), dtype=np.int32)
        tokens = np.frombuffer(handle.read(4 * n_ctx * int(n_chunk)), dtype=np.int32)
    return n_ctx, [list(map(int, tokens[i * n_ctx:(i + 1) * n_ctx])) for i in range(int(n_chunk))]


def run_tool(command: list[str]) -> tuple[float, str]:
    began = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return seconds, result.stdout + result.stderr


def project(reference: Path, candidate: Path, chunks: list[list[int]], n_ctx: int, threads: int):
    """The project's per-position KL and top-1 agreement over ``chunks``, each one window, and its seconds."""
    from miniature import tasks
    from miniature.models import open_backend, parse_model_spec
    from miniature.tasks.causal_lm_pairs import PairPlan, merge, shard_statistics
    from miniature.tasks.token_windows import padded_batches, segments, windows_per_batch

    causal = tasks.get("causal-lm")
    began = time.perf_counter()
    backends = []
    for path in (reference, candidate):
        backend = open_backend(parse_model_spec(f"gguf:{path}?threads={threads}"))
        backend.load(causal, causal)
        backends.append(backend)
    counts = np.array([len(c) - 1 for c in chunks], dtype=np.int64)
    pieces = segments(chunks, n_ctx, n_ctx // 2)
    per_batch = windows_per_batch(backends, n_ctx, 64)
    plan = PairPlan(chunks, counts, np.cumsum(counts) - counts, pieces, list(padded_batches(backends[0], chunks, pieces, per_batch)))
    names = ["reference", "candidate"]
    eval_set = SimpleNamespace(name="llama-perplexity's chunks", ids=[f"chunk {i}" for i in range(len(chunks))])
    statistics = merge(plan, shard_statistics(backends, names, plan.batches, plan.work(plan.batches), eval_set), "causal-lm")
    seconds = time.perf_counter() - began
    # llama-perplexity scores positions n_ctx/2 .. n_ctx-2 of each chunk (each predicting the token after it)
    scored = np.concatenate([np.arange(n_ctx // 2, n_ctx - 1) + offset for offset in plan.offsets])
    return statistics.kl[scored], statistics.same_top[scored], seconds, [b.tokens_decoded for b in backends]


def text_file(path: Path, data: Path, reviews: int) -> None:
    with open(data / "imdb_cad" / "orig_test.tsv", encoding="utf-8") as handle:
        texts = [r["Text"] for r in csv.DictReader(handle, delimiter="\t")][:reviews]
    path.write_text("\n\n".join(texts), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, help="the reference GGUF (the F16)")
    parser.add_argument("--candidate", required=True, help="the quantized GGUF")
    parser.add_argument("--ctx", type=int, default=512, help="tokens per chunk (llama-perplexity -c; default 512)")
    parser.add_argument("--chunks", type=int, default=8, help="chunks (default 8)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for both (default: all cores)")
    parser.add_argument("--perplexity", help="a llama-perplexity binary (default: built from llama-cpp-python's source)")
    parser.add_argument("--build-dir", default=str(Path(tempfile.gettempdir()) / "miniature-llama-cpp"),
                        help="where llama-perplexity is built and kept")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    args = parser.parse_args()
    tool = Path(args.perplexity) if args.perplexity else perplexity_tool(Path(args.build_dir))
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        text_file(scratch / "imdb.txt", Path(args.data), 120)
        base = scratch / "base.kld"
        common = ["-c", str(args.ctx), "-b", str(args.ctx), "-t", str(args.threads), "-tb", str(args.threads), "--no-warmup"]
        base_seconds, _ = run_tool([str(tool), "-m", args.reference, "-f", str(scratch / "imdb.txt"), "--chunks",
                                    str(args.chunks), "--kl-divergence-base", str(base), *common])
        kl_seconds, said = run_tool([str(tool), "-m", args.candidate, "--kl-divergence-base", str(base), "--kl-divergence",
                                     *common])
        n_ctx, chunks = read_base_tokens(base)
    tool_kl = float(re.search(r"Mean\s+KLD:\s+([-\d.e]+)", said).group(1))
    tool_same = float(re.search(r"Same top p:\s+([\d.]+)", said).group(1)) / 100
    kl, same, seconds, decoded = project(Path(args.reference), Path(args.candidate), chunks, n_ctx, args.threads)
    tokens = len(chunks) * n_ctx
    print(f"llama.cpp {tool.name} (llama-cpp-python {version('llama-cpp-python')} source), {len(chunks)} chunks of "
          f"{n_ctx} tokens = {tokens} tokens per model, {kl.size} scored positions, {args.threads} threads")
    print(f"{'':28} {'mean KL':>12} {'same top':>9} {'seconds':>8} {'tokens/s':>9}")
    tool_seconds = base_seconds + kl_seconds
    print(f"{'llama-perplexity (2 runs)':28} {tool_kl:12.6f} {tool_same:9.4f} {tool_seconds:8.2f} "
          f"{2 * tokens / tool_seconds:9.1f}")
    print(f"{'miniature (GGUF pair)':28} {kl.mean():12.6f} {same.mean():9.4f} {seconds:8.2f} {sum(decoded) / seconds:9.1f}")
    print(f"KL relative gap {abs(kl.mean() - tool_kl) / tool_kl:.2e} (llama.cpp stores the reference's log-probabilities "
          f"as uint16); speed: miniature {tool_seconds / seconds:.2f}x llama-perplexity's (its two runs {base_seconds:.2f} s "
          f"+ {kl_seconds:.2f} s)")


if __name__ == "__main__":
    main()
