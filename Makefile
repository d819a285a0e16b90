# `make study` runs the default study; `make test` runs the tests. Both set up .venv first.
VENV := .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the CPU wheel of torch 2.13.0 lies on these machines' disk; an unpinned torch pulls a CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# the report's browser test drives Debian's Chromium; where it cannot be installed (no root) that test skips
/usr/bin/chromium:
	-(apt-get update -qq && apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 || \
	  echo "Chromium could not be installed: the browser test will skip"

.PHONY: setup study test bench
setup: $(VENV)/.installed

study: setup
	$(VENV)/bin/factrecall study --out studies/default

test: setup /usr/bin/chromium
	$(PY) -m pytest -n 2 --dist loadfile

bench: setup
	for b in benchmarks/*.py; do $(PY) $$b; done
