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

test: $(VENV)/.installed browser
	$(PY) -m pytest -q --durations=25

# The study page's browser test (tests/analysis/test_report.py) loads the page in headless Chromium; it is skipped,
# naming chromium, where there is none. As root on Debian/Ubuntu, install it quietly; elsewhere, or if that fails,
# say so and go on.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  command -v google-chrome >/dev/null 2>&1 || { \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	      echo "installing chromium for the browser test (apt-get install -y chromium)"; \
	      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 || \
	        echo "note: could not install chromium; the browser test will be skipped"; \
	    else \
	      echo "note: no chromium (install it: apt-get install -y chromium); the browser test will be skipped"; \
	    fi; }

.PHONY: install study test browser smoke-specs

# Every shipped spec's `--smoke` end to end, each in its own folder (its own MLflow store; `study/` linked, since specs
# name classmaps relative to the checkout; xdomain's sets built there), one after another;
# the CIFAR-10 x ESC-50 specs need those datasets (downloaded, or a mirror), so they are left out unless named:
#   make smoke-specs                                  # about 20 s per spec on 2 cores
#   make smoke-specs SMOKE_SPECS="study/specs/cifar_esc50.yaml"
SMOKE_SPECS ?= $(filter-out study/specs/cifar%,$(wildcard study/specs/*.yaml))
smoke-specs: $(VENV)/.installed
	@set -e; for spec in $(SMOKE_SPECS); do \
	  dir=$$(mktemp -d); echo "== $$spec (in $$dir)"; ln -s $(abspath study) $$dir/study; \
	  case $$spec in *xdomain*) $(PY) study/tools/make_xdomain.py $$dir/out/xdomain --per-class 20 >/dev/null;; esac; \
	  (cd $$dir && $(abspath $(PY)) $(abspath study/run.py) $(abspath $$spec) --smoke > run.log 2>&1) \
	    || { tail -20 $$dir/run.log; echo "FAILED: $$spec --smoke (log: $$dir/run.log)"; exit 1; }; \
	  grep -E "trials finished" $$dir/run.log | tail -1; \
	done
