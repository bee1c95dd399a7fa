# The two set-up commands of the README. Both work on a fresh machine: they install what
# they need first (scripts/bootstrap.sh).
.PHONY: benchmark test lint bootstrap

PY := .venv/bin/python

bootstrap:
	scripts/bootstrap.sh

# A small matrix on the embedded local platform: real Envoy sidecars on loopback.
benchmark: bootstrap
	$(PY) runner/runner.py 1,4,16 1000 10 --baseline --serversidecar --uniform

test:
	scripts/bootstrap.sh --system-deps
	$(PY) -m pytest

lint:
	$(PY) -m ruff check runner tests bench
	$(PY) -m mypy runner
