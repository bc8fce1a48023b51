# The two set-up commands of the README: `make quickstart` and `make test`.
.PHONY: quickstart test lint bench

quickstart:
	scripts/setup.sh all
	.venv/bin/qwythos quickstart

test:
	scripts/setup.sh dev
	.venv/bin/python -m pytest

lint:
	.venv/bin/ruff check src tests bench
