#!/usr/bin/env bash
# The published U-Net segmentation failure at the published width, on one GPU, in one go:
# the 64-channel configs (configs/stress/mnist_segmentation/unet_sgd-1000e_mnist-t10k-seg_gpu_*)
# with the original loss ('none') and the exact one side by side, through the stress engine
# (tools/sweep.py: divergence records with the loss and the logit extremes of every epoch, the
# CSV row of each run, loss curves with a cross at the first NaN), then the logit-extremes
# figure. Stops at the first non-finite step of either run or at the wall-time budget.
#
#   bash tools/gpu_stress.sh OUT [--budget-min 9] [--data DIR] [--wheelhouse DIR]
#                            [--threads N] [-- SWEEP_OPTIONS ...]
#
# OUT          results (CSV, curves.json, figures, the divergence records, machine.txt); the
#              runs themselves train in OUT_runs (kept out of OUT: they hold large files)
# --data       folder with t10k-images-idx3-ubyte.gz / t10k-labels-idx1-ubyte.gz
#              (default: $FOCAL_MNIST_T10K, else data/mnist)
# --wheelhouse a folder made by tools/wheelhouse.sh: installed (into OUT_runs/site, nothing
#              else touched) when mmengine is missing, as on a bare GPU machine
# after --     passed to tools/sweep.py (e.g. --cfg-options model.base_channels=2 for a
#              tiny run, --max-epochs 2)
# Without CUDA it runs on the CPU (what CI does, at a tiny size) and says so.
set -euo pipefail

# usage [RC]: the header above; on stdout and exit 0 when asked for (--help), else on stderr
usage() {
  local rc=${1:-2}
  {
    echo "usage: bash tools/gpu_stress.sh OUT [--budget-min MIN] [--data DIR]" \
      "[--wheelhouse DIR] [--threads N] [-- SWEEP_OPTIONS ...]"
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
  } >&"$(( rc == 0 ? 1 : 2 ))"
  exit "$rc"
}
case ${1:-} in -h|--help) usage 0 ;; esac
[ $# -ge 1 ] && [ "${1#-}" = "$1" ] || usage
OUT=$1; shift
BUDGET_MIN=9
DATA=${FOCAL_MNIST_T10K:-data/mnist}
WHEELS=""
THREADS=""
EXTRA=()
while [ $# -gt 0 ]; do
  case $1 in
    --budget-min) BUDGET_MIN=$2; shift 2 ;;
    --data) DATA=$2; shift 2 ;;
    --wheelhouse) WHEELS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) usage 0 ;;
    *) echo "unknown option $1" >&2; usage ;;
  esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-}
[ -n "$PY" ] || { [ -x "$ROOT/.venv/bin/python" ] && PY=$ROOT/.venv/bin/python || PY=python3; }
WORK=${OUT%/}_runs
mkdir -p "$OUT" "$WORK"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
log() { echo "[gpu_stress $(date +%H:%M:%S)] $*"; }

if ! "$PY" -c 'import mmengine' 2>/dev/null; then
  [ -n "$WHEELS" ] || { echo "mmengine is not installed: pass --wheelhouse DIR (made by" \
    "'bash tools/wheelhouse.sh DIR --python-version X.Y' where PyPI is reachable)" >&2; exit 2; }
  log "installing the wheelhouse $WHEELS into $WORK/site (no index, no network)"
  "$PY" -m pip install --quiet --no-index --no-deps --target "$WORK/site" "$WHEELS"/*.whl
  export PYTHONPATH="$ROOT:$WORK/site${PYTHONPATH#$ROOT}"
fi
export FOCAL_MNIST_T10K=$DATA
DEVICE=$("$PY" -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")')
[ "$DEVICE" = cpu ] && log "CUDA is not available: running on the CPU (use a tiny size)"
if [ -z "$THREADS" ]; then THREADS=$([ "$DEVICE" = cpu ] && echo 1 || echo 4); fi
{
  echo "command: bash tools/gpu_stress.sh $OUT --budget-min $BUDGET_MIN --data $DATA ${EXTRA[*]:-}"
  echo "device: $DEVICE"
  "$PY" -c 'import sys, torch, mmengine; print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda", torch.version.cuda, "| mmengine", mmengine.__version__)'
  echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "started: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} | tee "$OUT/machine.txt"

BUDGET_S=$(awk -v m="$BUDGET_MIN" 'BEGIN { print m * 60 }')
log "none and exact side by side, budget ${BUDGET_MIN} min, ${THREADS} thread(s) each"
status=0
"$PY" "$ROOT/tools/sweep.py" \
  "$ROOT/configs/stress/mnist_segmentation/unet_sgd-1000e_mnist-t10k-seg_gpu_{mode}.py" \
  --modes none exact --jobs 2 --threads-per-job "$THREADS" --work-root "$WORK" --out "$OUT" \
  --budget-s "$BUDGET_S" --stop-on-divergence --plot curves "${EXTRA[@]}" || status=$?

RUNS=()
for mode in none exact; do
  record=$(ls "$WORK/$mode"/*/divergence.json 2>/dev/null | head -1 || true)
  if [ -n "$record" ]; then
    mkdir -p "$OUT/records/$mode"
    cp "$record" "$OUT/records/$mode/"
    RUNS+=("$mode=$record")
  fi
done
if [ ${#RUNS[@]} -gt 0 ]; then
  "$PY" "$ROOT/tools/plot_logit_extremes.py" "${RUNS[@]}" --out "$OUT/logit_extremes"
fi
echo "finished: $(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$OUT/machine.txt"
log "results in $OUT (sweep exit code $status)"
exit "$status"
