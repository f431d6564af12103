#!/usr/bin/env bash
# The GPU benchmarks in one go (random-full profile: RANDOM weights, real cost; fp16):
#   1. model speed-ups (bench/models.py) at the scheduler's batch sizes -> models-cuda.*
#   2. the fastest option within tolerance, outside torch.compile (bench.models --best)
#   3. concurrent live streams with that option, the scheduler against one batch loop per
#      stream (bench/streams.py) -> streams-random-full-cuda.*
#   4. optionally (GPU_ENGINE=1) the single-stream engine benchmark -> engine-cuda.*
#   5. optionally (GPU_WEBRTC=1) WebRTC sessions end to end on the real stack: the first live
#      frame and its platform/model split, peers per web process (pinned to CPU 0, the viewers
#      counting frames on the other cores) -> webrtc-sessions-random-full-web-pinned-counting-viewers-cuda.*
#      and the viewers' H.264 cost on this host's cores -> webrtc-encoder-cpu.* (BENCH_OUT)
# Each step has its own time limit and a failing step does not stop the next: about 7 minutes
# in all, 9 with GPU_ENGINE=1, 11-12 with GPU_WEBRTC=1.
#
# Usage: bench/gpu.sh [--avatar-dir DIR] [more bench.streams options]
#   BENCH_OUT=DIR   where the results go (default bench/results)
#   GPU_ACCEL=...   skip steps 1-2 and stream with these options ("none": the plain model)
#
# Python: $BENCH_PYTHON if set (any interpreter with a CUDA torch and requirements.txt), else the
# repo's .venv, created or updated by bin/bootstrap. Nothing here needs the internet once .venv
# is installed; to install offline, point pip at a wheelhouse first, e.g.
#   PIP_NO_INDEX=1 PIP_FIND_LINKS=/path/to/wheels bench/gpu.sh
# (torch==2.13.0 from PyPI on Linux is the CUDA build; the CPU-only wheel will not do here.)
# Media: /work/shared/media/sun.mp4 and eng.wav when present, else synthesized test media
# (the synthesized face clip needs scikit-image from requirements-dev.txt).
set -uo pipefail
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

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
out="${BENCH_OUT:-bench/results}"
note="bench/gpu.sh on $(hostname); fp16"
status=0

if [ -n "${GPU_ENGINE:-}" ]; then
  timeout 150 "$python" -m bench.engine --device cuda --batches 1,8,32,64 --out-dir "$out" \
    --note "$note; untimed warm-up batch before each batch size." \
    || { echo "bench/gpu.sh: bench.engine exit $?" >&2; status=1; }
fi

accel="${GPU_ACCEL:-}"
if [ -z "$accel" ]; then
  # Eager options first, compile last; the results are rewritten after each option, so a
  # timeout keeps what finished. 16 and 48: a live batch and the scheduler's largest.
  timeout 150 "$python" -m bench.models --device cuda --batches 16,48 --budget-seconds 100 \
    --out-dir "$out" --note "$note" \
    || { echo "bench/gpu.sh: bench.models exit $?" >&2; status=1; }
  accel=$("$python" -m bench.models --best "$out/models-cuda.json" --batches 48 2>/dev/null) \
    || accel=""
fi
[ "$accel" = none ] && accel=""
echo "bench/gpu.sh: streams with model speed-ups: ${accel:-none}" >&2

# Concurrent live streams, interleaved per K with the baseline (up to K=16: beyond it the
# baseline only shows more of the same); 4 s utterances; no new K after 170 s.
streams=(--device cuda --streams 1,2,4,8,16,20,24,32 --baseline-streams 1,2,4,8,16 --seconds 4
  --batch-size 8 --single-batches 8,16 --budget-seconds 170 --out-dir "$out")
timeout 240 "$python" -m bench.streams "${streams[@]}" --accel "$accel" --note "$note" "$@"
rc=$?
if [ $rc -ne 0 ]; then
  status=1
  # a timeout keeps the rounds that finished; a failure with the speed-ups gets one more try
  if [ $rc -ne 124 ] && [ -n "$accel" ]; then
    echo "bench/gpu.sh: bench.streams with '$accel' failed ($rc); again with the plain model" >&2
    timeout 200 "$python" -m bench.streams "${streams[@]}" --budget-seconds 120 \
      --note "$note; the run with $accel failed" "$@" || status=1
  fi
fi

if [ -n "${GPU_WEBRTC:-}" ]; then
  timeout 240 "$python" -m bench.webrtc --mode sessions --profile random-full --device cuda \
    --peers 1,4,8,12,16 --utterances 5 --web-cpus 0 --viewers count --out-dir "$out" \
    || { echo "bench/gpu.sh: bench.webrtc sessions exit $?" >&2; status=1; }
  timeout 60 "$python" -m bench.webrtc --mode encoder --out-dir "$out" \
    || { echo "bench/gpu.sh: bench.webrtc encoder exit $?" >&2; status=1; }
fi
exit $status
