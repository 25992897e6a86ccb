#!/usr/bin/env bash
# Create a virtual environment with latewise and everything its tests need.
#
#   bash scripts/install.sh [VENV_DIR]      (default: .venv)
#
# torch and torchvision must be a matching pair or torchvision (and with it transformers' vision
# models and colpali-engine) fails to import. `--isolated` makes pip ignore machine-wide pip
# settings that may point at a CPU-only torch wheel that does not match PyPI's torchvision.
set -euo pipefail
venv="${1:-.venv}"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --isolated -q -U pip
"$venv/bin/python" -m pip install --isolated "torch==2.13.0" "torchvision==0.28.0" -e ".[all,test]"
