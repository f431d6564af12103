#!/usr/bin/env bash
# The engine benchmark on a CUDA machine: random-full profile (RANDOM weights, real cost), fp16,
# batches 1..64, the model speed-ups (bench/models.py), then concurrent streams
# (bench/streams.py). Writes bench/results/engine-cuda.*, models-cuda.* and
# streams-random-full-cuda.*. About 6-9 minutes.
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
# Worst case 150 + 120 + 240 s: one device call (600 s at most) with room to spare.
timeout 150 "$python" -m bench.engine --device cuda --batches 1,8,32,64 \
  --note "bench/gpu.sh on $(hostname); fp16; untimed warm-up batch before each batch size." "$@"
# Model speed-ups (inference/accel.py): eager options first, compile last; the results are
# rewritten after each option, so a timeout keeps what finished. A failure here does not stop
# the streams step.
timeout 120 "$python" -m bench.models --device cuda --budget-seconds 80 \
  --note "bench/gpu.sh on $(hostname); fp16" || echo "bench/gpu.sh: bench.models exit $?" >&2
# Concurrent live streams, the scheduler against one batch loop per stream (interleaved per K):
# 4 s utterances, K up to 24; no new K starts after 180 s, results rewritten after each round.
exec timeout 240 "$python" -m bench.streams --device cuda --streams 1,2,4,8,16,24 --seconds 4 \
  --batch-size 8 --single-batches 8,16,48 --budget-seconds 180 \
  --note "bench/gpu.sh on $(hostname); fp16" "$@"
