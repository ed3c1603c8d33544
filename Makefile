# The two commands: `make demo` (set up everything, run the main job end to end) and
# `make test` (set up everything, run lint, type checks and the tests). See README.md.
SHELL := /bin/bash
NPS_CACHE ?= $(shell [ "$$(id -u)" = 0 ] && echo /var/cache/nps || echo $${XDG_CACHE_HOME:-$$HOME/.cache}/nps)
export NPS_CACHE
VENV := $(NPS_CACHE)/venv
PY := $(VENV)/bin/python
# What goes on PATH: a folder holding only a link to the venv's `nps`. The venv's own bin would
# also put pynetdicom's Python `storescu`, `echoscu`... ahead of dcmtk's programs of those names.
NPS_BIN := $(NPS_CACHE)/cli
DEPS_STAMP := $(VENV)/.deps-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: demo test up down status setup lint bench schemas

demo: up setup
	PATH=$(NPS_BIN):$$PATH bash examples/demo.sh

test: up setup lint
	PATH=$(NPS_BIN):$$PATH $(PY) -m pytest -ra $(PYTEST_ARGS)

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
	mkdir -p $(NPS_BIN) && ln -sfn $(VENV)/bin/nps $(NPS_BIN)/nps

$(DEPS_STAMP): pyproject.toml
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[dev]'
	rm -f $(VENV)/.deps-* && touch $@

# lint-imports checks the architecture's contracts ([tool.importlinter] in pyproject.toml,
# explained in docs/architecture.md); --no-cache leaves no cache folder in the checkout.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache --no-logo
	$(PY) -m schemas.export --check

schemas: setup
	$(PY) -m schemas.export

bench: up setup
	bash infra/stack.sh mc
	PATH=$(NPS_BIN):$$PATH $(PY) bench/store_bench.py --repeat 5
	PATH=$(NPS_BIN):$$PATH $(PY) bench/jobs_bench.py
	PATH=$(NPS_BIN):$$PATH $(PY) bench/ingest_bench.py
	PATH=$(NPS_BIN):$$PATH $(PY) bench/scp_bench.py
	PATH=$(NPS_BIN):$$PATH $(PY) bench/processors_bench.py
	PATH=$(NPS_BIN):$$PATH $(PY) bench/api_bench.py
	PATH=$(NPS_BIN):$$PATH $(PY) bench/logs_bench.py
