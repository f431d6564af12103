#!/usr/bin/env bash
# The engine benchmark on a CUDA machine: random-full profile (RANDOM weights, real cost), fp16,
# batches 1..64, then concurrent streams (bench/streams.py). Writes bench/results/engine-cuda.*
# and streams-random-full-cuda.*. About 5-8 minutes.
#
# Usage: bench/gpu.sh [more bench.engine options, e.g. --device cuda:1]
#
# Python: $BENCH_PYTHON if set (any interpreter with a CUDA torch and requirements.txt), else the
# repo's .venv, created or updated by bin/bootstrap. Nothing here needs the internet once .venv
# is installed; to install offline, point pip at a wheelhouse first, e.g.
#   PIP_NO_INDEX=1 PIP_FIND_LINKS=/path/to/wheels bench/gpu.sh
# (torch==2.13.0 from PyPI on Linux is the CUDA build; the CPU-only wheel will not do here.)
# Media: /work/shared/media/sun.mp4 and eng.wav when present, else synthesized test media
# (the synthesized face clip needs scikit-image from requirements-dev.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

python="${BENCH_PYTHON:-}"
if [ -z "$python" ]; then
  if ! bin/bootstrap requirements.txt; then
    echo "bench/gpu.sh: could not install requirements.txt into .venv (no package index?)." >&2
    echo "Set PIP_FIND_LINKS to a wheelhouse, or BENCH_PYTHON to a ready interpreter." >&2
    exit 1
  fi
  python=.venv/bin/python
fi

if ! "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "bench/gpu.sh: $python has no usable CUDA torch ($("$python" -c 'import torch; print(torch.__version__)' 2>&1))" >&2
  exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
timeout 290 "$python" -m bench.engine --device cuda --batches 1,4,8,16,32,64 \
  --note "bench/gpu.sh on $(hostname); fp16; untimed warm-up batch before each batch size." "$@"
exec timeout 300 "$python" -m bench.streams --device cuda --streams 1,2,4,8,16 --budget-seconds 240 \
  --note "bench/gpu.sh on $(hostname); fp16" "$@"
