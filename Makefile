# The two commands: `make demo` and `make test`. Both set up .venv first (idempotent).
# `make rlhf`, `make hybrid`, `make code` and `make facts` run the RLHF, hybrid, code and facts demos (see the README).
.PHONY: setup demo test assets rlhf-assets rlhf-rm rlhf hybrid code-assets code facts-assets facts

setup:
	@bash scripts/setup.sh

assets: setup
	@.venv/bin/threefold demo-assets

demo: assets
	@.venv/bin/threefold train configs/rlvr-arith.yaml

test: setup
	@.venv/bin/python -m pytest -q

rlhf-assets: setup
	@.venv/bin/threefold demo-assets --rlhf

rlhf-rm: rlhf-assets
	@.venv/bin/threefold rm train configs/rlhf-rm.yaml

rlhf: rlhf-rm
	@.venv/bin/threefold train configs/rlhf-arith.yaml

hybrid: rlhf-rm
	@.venv/bin/threefold train configs/hybrid-arith.yaml

code-assets: setup
	@.venv/bin/threefold demo-assets --code

code: code-assets
	@.venv/bin/threefold train configs/rlvr-code.yaml

facts-assets: setup
	@.venv/bin/threefold demo-assets --facts

facts: facts-assets
	@.venv/bin/threefold train configs/rlvr-facts.yaml
