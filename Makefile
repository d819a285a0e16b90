# `make study` runs the default study; `make test` runs the tests. Both set up .venv first.
VENV := .venv
PY := $(VENV)/bin/python
# A second environment at the floors pyproject.toml declares for transformers, accelerate and peft
# (what current GPU images have); `make test` runs the version-sensitive tests there too.
FLOOR_VENV := .venv-floor
FLOOR_PINS = $(shell python3 -c 'import tomllib; deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]; print(" ".join(d.replace(">=", "==") for d in deps if d.split(">=")[0] in ("transformers", "accelerate", "peft")))')
FLOOR_TESTS := tests/test_versions.py tests/test_scale.py tests/test_ddp.py tests/test_checkpoint_dtype.py \
	tests/test_study.py tests/test_hf_callback.py tests/test_lora.py

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the CPU wheel of torch 2.13.0 lies on these machines' disk; an unpinned torch pulls a CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $@

$(FLOOR_VENV)/.installed: pyproject.toml
	python3 -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/python -m pip install -q --upgrade pip
	$(FLOOR_VENV)/bin/python -m pip install -q torch==2.13.0
	$(FLOOR_VENV)/bin/python -m pip install -q -e '.[test]' $(FLOOR_PINS)
	touch $@

# the report's browser test drives Debian's Chromium; where it cannot be installed (no root) that test skips
/usr/bin/chromium:
	-(apt-get update -qq && apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 || \
	  echo "Chromium could not be installed: the browser test will skip"

.PHONY: setup floor study test test-floor bench
setup: $(VENV)/.installed
floor: $(FLOOR_VENV)/.installed

study: setup
	$(VENV)/bin/factrecall study --out studies/default

test: setup /usr/bin/chromium test-floor
	$(PY) -m pytest -n 2 --dist loadfile

test-floor: floor
	FACTRECALL_FLOOR_PINS="$(FLOOR_PINS)" $(FLOOR_VENV)/bin/python -m pytest -n 2 --dist loadfile $(FLOOR_TESTS)

bench: setup
	for b in benchmarks/*.py; do $(PY) $$b; done
