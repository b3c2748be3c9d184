#!/usr/bin/env bash
# Installs TRL for bench/vs_trl.py into bench/.trl, a bench-only folder that is NOT part of the
# project's environment: `.venv/bin/python` sees it only with PYTHONPATH=bench/.trl, which
# vs_trl.py sets for its TRL subprocess alone. Torch and transformers are reused from .venv
# (never a second torch): pip's dry run against .venv says which packages are missing, and only
# those are installed, --no-deps. Idempotent: does nothing when bench/.trl already imports trl.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
TARGET=bench/.trl
TRL_VERSION="${TRL_VERSION:-1.16.0}"
[ -x "$PY" ] || { echo "no .venv: run scripts/setup.sh first" >&2; exit 1; }

check() {
  PYTHONPATH="$TARGET" "$PY" - <<'PY'
import os, sys, torch, transformers, trl
venv = os.path.realpath(".venv")
for m in (torch, transformers):
    assert os.path.realpath(m.__file__).startswith(venv), f"{m.__name__} not from .venv: {m.__file__}"
print(f"trl {trl.__version__} (bench/.trl), torch {torch.__version__} and transformers {transformers.__version__} from .venv")
PY
}

if [ -f "$TARGET/.installed-$TRL_VERSION" ] && check 2>/dev/null; then exit 0; fi

# What pip would add to .venv for TRL: the packages .venv lacks (nothing is installed by this call).
missing=$("$PY" -m pip install --dry-run --no-input "trl==$TRL_VERSION" 2>/dev/null \
          | sed -n 's/^Would install //p' | tr ' ' '\n' | sed -E 's/^(.+)-([^-]+)$/\1==\2/' | grep . || true)
[ -n "$missing" ] || { echo "pip's dry run found nothing to install (is trl already in .venv?)" >&2; exit 1; }
if echo "$missing" | grep -qiE '^(torch|transformers|nvidia|triton)'; then
  echo "refusing: TRL would pull in another torch/transformers:" $missing >&2; exit 1
fi
echo "installing into $TARGET (--no-deps):" $missing
rm -rf "$TARGET"
"$PY" -m pip install --quiet --no-input --no-deps --target "$TARGET" $missing
touch "$TARGET/.installed-$TRL_VERSION"
check
