# The two commands: `make demo` and `make test`. Both set up .venv first (idempotent).
.PHONY: setup demo test assets

setup:
	@bash scripts/setup.sh

assets: setup
	@.venv/bin/threefold demo-assets

demo: assets
	@.venv/bin/threefold train configs/rlvr-arith.yaml

test: setup
	@.venv/bin/python -m pytest -q
