#!/usr/bin/env bash
# Create .venv with everything pytest-miniature needs, from scratch; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first and pinned: an unpinned torch (or one pulled in by another package) can be a
# multi-GB CUDA build. Override with TORCH_SPEC, e.g. TORCH_SPEC="torch==2.5.1".
.venv/bin/python -m pip install --quiet "${TORCH_SPEC:-torch==2.13.0}"
# The gguf extra builds llama-cpp-python from source; its multimodal library (llava/mtmd) is not used here.
CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    .venv/bin/python -m pip install --quiet -e ".[dev,attack,ray,gguf]"
echo "setup: .venv ready ($(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
