# The two commands of the README. Each sets up what it needs first (scripts/bootstrap).
.PHONY: dev test lint bench celery-compat

dev:            ## run the whole pipeline locally (Postgres, SQS, HTTP API, consumers, Celery)
	@scripts/bootstrap
	.venv/bin/tasklane dev

test:           ## run every test and check (real Postgres, moto SQS, Celery worker, SAM CLI)
	@scripts/bootstrap --sam
	.venv/bin/ruff check .
	.venv/bin/bandit -q -r layers/tasklane/tasklane functions
	.venv/bin/lint-imports
	.venv/bin/pytest

lint:
	@scripts/bootstrap
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

bench:          ## benchmarks (bench/README.md)
	@scripts/bootstrap
	.venv/bin/python -m bench

celery-compat:  ## Celery's own integration suite on tasklane, three configurations (compat/)
	@scripts/bootstrap
	.venv/bin/python -m compat --markdown compat/results.md
	.venv/bin/python docs/snippets.py  # docs/celery.md shows the tables
