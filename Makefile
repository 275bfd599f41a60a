# Two commands on a fresh machine (each does its own set-up through scripts/bootstrap):
#   make demo   run the consumer-resilience experiment (plan test 8) against the embedded stack
#   make test   run the test suite (unit + integration + smoke experiments)
.PHONY: demo test bootstrap lint

bootstrap:
	./scripts/bootstrap

demo: bootstrap
	./scripts/demo

test:
	./scripts/test $(PYTEST_ARGS)

lint: bootstrap  ## fix what the test command checks: lint, format, experiments JSON style
	.venv/bin/ruff check .
	.venv/bin/ruff format .
	.venv/bin/python scripts/format_experiments.py
