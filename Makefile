# The two commands: `make demo` and `make test`. Both set up .venv first (idempotent).
# `make rlhf`, `make hybrid`, `make code`, `make facts` and `make rlaif` run the RLHF, hybrid, code, facts and RLAIF demos (see the README).
.PHONY: setup demo test assets rlhf-assets rlhf-rm rlhf hybrid code-assets code facts-assets facts rlaif-assets rlaif

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

rlaif-assets: setup
	@.venv/bin/threefold demo-assets --rlaif

rlaif: rlaif-assets
	@.venv/bin/threefold train configs/rlaif-arith.yaml
