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

lint: bootstrap
	.venv/bin/ruff check chaosmessaging msgstack tests benchmarks
