# The two commands a newcomer needs: `make demo` and `make test`.
.PHONY: demo test bootstrap lint

bootstrap:
	./scripts/bootstrap.sh

demo: bootstrap
	.venv/bin/holdscan demo

test: bootstrap
	.venv/bin/python -m pytest -q -p no:cacheprovider tests

lint:
	.venv/bin/ruff check .
