# Two entry points a new user needs: `make study` (install + the default study) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
SPEC ?= study/specs/quick.yaml

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

study: $(VENV)/.installed
	$(PY) study/run.py $(SPEC)

test: $(VENV)/.installed
	$(PY) -m pytest -q

.PHONY: install study test
