#!/usr/bin/env bash
# GPU check for one lent machine: learner tokens/s and MFU on a ~0.5B demo-family Llama, weight
# packing GB/s, CUDA-IPC (and with 2+ GPUs, NCCL) transfer GB/s. See bench/README.md.
#   [GPU_TESTS=1] bash bench/gpu_check.sh [--quick] [bench/gpu_check.py options]
# Needs python3 with torch (CUDA build) and transformers; not Ray, not vLLM, not the project's .venv.
# Exits 2 when there is no GPU, 3 when torch or transformers is missing, 124 past the 480 s bound.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no GPU here (nvidia-smi missing or sees no device); this check needs a CUDA GPU" >&2
  exit 2
fi
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader
if ! "$PY" -c "import torch, transformers" >/dev/null 2>&1; then
  echo "gpu_check: $PY cannot import torch and transformers (set PYTHON=... to another interpreter)" >&2
  exit 3
fi
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
  echo "gpu_check: torch $("$PY" -c 'import torch; print(torch.__version__)') sees no CUDA GPU; this check needs one" >&2
  exit 2
fi
# GPU_TESTS=1: first the project's gpu-marked tests (learner on CUDA, CUDA IPC, NCCL with 2+ GPUs), 240 s at most
if [ "${GPU_TESTS:-0}" = 1 ]; then
  if "$PY" -c "import pytest" >/dev/null 2>&1; then
    PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" timeout --kill-after=10 240 "$PY" -m pytest -q -p no:cacheprovider -m gpu \
      tests/learners/test_trainer.py tests/learners/test_weight_transport.py tests/learners/test_reward_model.py \
      || echo "gpu_check: gpu-marked tests failed (exit $?)" >&2
  else
    echo "gpu_check: GPU_TESTS=1 but $PY cannot import pytest; carry it (pip download pytest) or skip" >&2
  fi
fi
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec timeout --kill-after=10 480 "$PY" bench/gpu_check.py "$@"
