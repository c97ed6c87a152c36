#!/usr/bin/env bash
# The CUDA check of the fused losses on a bare GPU machine (torch + Triton, no mmdet):
#   bash tools/gpu_check.sh OUT_DIR [--sections ...] [--quick]
# Uses the working tree's focal_plugin (PYTHONPATH) and ${PYTHON:-.venv/bin/python, else
# python3}. Runs green on a CPU-only machine too (CUDA-only parts are skipped, with a message).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
if [ $# -lt 1 ]; then
  echo "usage: bash tools/gpu_check.sh OUT_DIR [--sections parity speed compile autocast segmentation hook] [--quick]" >&2
  exit 2
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"  # deliberate: a 2-core CI box runs other work
exec "$PYTHON" "$ROOT/tools/gpu_check.py" "$@"
