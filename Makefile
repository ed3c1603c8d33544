# The two commands: `make demo` (set up everything, run the main job end to end) and
# `make test` (set up everything, run lint, type checks and the tests). See README.md.
SHELL := /bin/bash
NPS_CACHE ?= $(shell [ "$$(id -u)" = 0 ] && echo /var/cache/nps || echo $${XDG_CACHE_HOME:-$$HOME/.cache}/nps)
export NPS_CACHE
VENV := $(NPS_CACHE)/venv
PY := $(VENV)/bin/python
DEPS_STAMP := $(VENV)/.deps-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: demo test up down status setup lint bench schemas

demo: up setup
	PATH=$(VENV)/bin:$$PATH bash examples/demo.sh

test: up setup lint
	PATH=$(VENV)/bin:$$PATH $(PY) -m pytest -ra $(PYTEST_ARGS)

up:
	bash infra/stack.sh up

down:
	bash infra/stack.sh down

status:
	bash infra/stack.sh status

# The virtualenv lives in the cache, outside the repo; dependencies are reinstalled only when
# pyproject.toml changes, the (editable) project itself every time, so any checkout works.
setup: $(DEPS_STAMP)
	$(VENV)/bin/pip install -q --no-deps -e .

$(DEPS_STAMP): pyproject.toml
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[dev]'
	rm -f $(VENV)/.deps-* && touch $@

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m schemas.export --check

schemas: setup
	$(PY) -m schemas.export

bench: up setup
	bash infra/stack.sh mc
	PATH=$(VENV)/bin:$$PATH $(PY) bench/store_bench.py --repeat 5
	PATH=$(VENV)/bin:$$PATH $(PY) bench/jobs_bench.py
	PATH=$(VENV)/bin:$$PATH $(PY) bench/ingest_bench.py
	PATH=$(VENV)/bin:$$PATH $(PY) bench/scp_bench.py
	PATH=$(VENV)/bin:$$PATH $(PY) bench/processors_bench.py
	PATH=$(VENV)/bin:$$PATH $(PY) bench/api_bench.py
	PATH=$(VENV)/bin:$$PATH $(PY) bench/logs_bench.py
