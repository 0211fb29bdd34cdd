#!/usr/bin/env bash
# GPU check: on a machine with a CUDA GPU, install the CUDA build of torch into its own venv, run a
# short FSDP + bf16 + LoRA SmolLM2 train on all visible GPUs through Ray, compare its domain-weight
# trajectory with the CPU path, and print tokens/s, peak GPU memory and MFU (scripts/gpu_check.py).
#
#   make gpu-check                       # or: bash scripts/gpu_check.sh [--steps 8 --tolerance 5e-3 ...]
#   CUDA_INDEX_URL=https://download.pytorch.org/whl/cu126 make gpu-check    # another CUDA build
#
# Needs network access to PyPI and the PyTorch wheel index (or a pip mirror via PIP_INDEX_URL).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check: no CUDA GPU here (nvidia-smi missing or failing); run it on a GPU machine." >&2
    exit 2
fi
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv-gpu}
CUDA_INDEX_URL=${CUDA_INDEX_URL:-https://download.pytorch.org/whl/cu128}
TORCH_VERSION=$(sed -n 's/^torch==\([0-9.]*\).*/\1/p' requirements.txt)

# A separate venv: the project's .venv holds the CPU wheel, which must stay as it is.
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "torch==${TORCH_VERSION}" --index-url "$CUDA_INDEX_URL"
# torch==X in requirements.txt is satisfied by the X+cuNNN build just installed: pip keeps it.
"$VENV/bin/python" -m pip install --quiet -r requirements.txt
"$VENV/bin/python" -m pip install --quiet --no-deps -r requirements-nodeps.txt
"$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e .
"$VENV/bin/python" -c "import torch, sys; ok = torch.cuda.is_available(); print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'GPUs', torch.cuda.device_count()); sys.exit(0 if ok else 1)" \
    || { echo "gpu_check: the installed torch cannot use the GPU (driver too old for $CUDA_INDEX_URL?)" >&2; exit 2; }

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 MLFLOW_DISABLE_TELEMETRY=true
export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled TOKENIZERS_PARALLELISM=false
# Ray workers import the package from this checkout, whatever the current directory.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$VENV/bin/python" scripts/gpu_check.py "$@"
