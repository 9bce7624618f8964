# The two commands of the README. Each sets up what it needs first.
.PHONY: demo test lint

demo:
	scripts/setup.sh run
	.venv/bin/switchboard demo

test:
	scripts/setup.sh test
	.venv/bin/ruff check .
	.venv/bin/pytest -q -p no:cacheprovider

lint:
	.venv/bin/ruff check .
