#!/usr/bin/env bash
# One-command setup: creates ./.venv and installs the pinned, mutually compatible toolchain
# (torch, torchvision, mmengine, mmcv with compiled ops, mmdet), this package (editable) and the
# test tools. Every version comes from requirements/constraints.txt; README "Installation" says
# why they are what they are.
#
#   bash tools/setup.sh            # create or repair .venv (safe to re-run)
#   VENV=/path/to/venv bash tools/setup.sh
#   FOCAL_KEEP_PIP_CONFIG=1 bash tools/setup.sh   # honour your pip.conf (private mirror, ...)
#
# Cold (empty pip cache) the mmcv build dominates (~25-30 min on 2 cores); warm (mmcv wheel in
# pip's cache) the whole script takes a few minutes at most.
set -Eeuo pipefail

case ${1:-} in
  -h|--help) echo "usage: [VENV=DIR] bash tools/setup.sh [--help]"
             sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) echo "setup.sh takes no arguments (got '$1'); see: bash tools/setup.sh --help" >&2; exit 2 ;;
esac

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
CONSTRAINTS=$ROOT/requirements/constraints.txt
PYTHON=${PYTHON:-python3}
STEP="starting"
T0=$(date +%s)

fail() {
  local rc=$?
  cat >&2 <<EOF

==================================================================================
setup FAILED (exit $rc) during: $STEP
The environment at $VENV is incomplete; nothing will work until this step passes.
What to do:
  - read the pip output just above for the first 'error:' line;
  - network/timeouts: re-run 'bash tools/setup.sh' (it resumes; finished steps are fast);
  - mmcv build errors: it needs gcc/g++ and Python headers ('apt-get install build-essential
    python3-dev'), and the torch pinned in requirements/constraints.txt (its C++17 headers);
  - to start from scratch: rm -rf '$VENV' && bash tools/setup.sh
==================================================================================
EOF
  exit "$rc"
}
trap fail ERR

step() { STEP=$1; printf '\n[setup %4ss] %s\n' "$(( $(date +%s) - T0 ))" "$STEP"; }

# This machine's pip configuration (and some users') points pip at a local find-links folder
# whose torch-2.13.0+cpu wheel satisfies 'torch==2.13.0' but breaks PyPI's torchvision at
# import. Unless asked otherwise we ignore pip config files and find-links so pip resolves
# exactly what a user's plain pip gets from PyPI.
if [ "${FOCAL_KEEP_PIP_CONFIG:-0}" != 1 ]; then
  export PIP_CONFIG_FILE=/dev/null
  unset PIP_FIND_LINKS PIP_CONSTRAINT PIP_EXTRA_INDEX_URL
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
# mmcv's build uses every core it is given; 2 jobs suits this 2-core machine (override freely).
export MAX_JOBS=${MAX_JOBS:-$(nproc)}

step "checking Python ($PYTHON)"
"$PYTHON" - <<'EOF'
import sys
if sys.version_info[:2] != (3, 11):
    raise SystemExit(f'Python 3.11 is required (the pinned wheels are tested on it); '
                     f'found {sys.version.split()[0]}. Set PYTHON=/path/to/python3.11.')
EOF

if [ ! -x "$VENV/bin/python" ]; then
  step "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY=$VENV/bin/python
# --no-compile: byte-compiling torch's thousands of modules at install time costs about a
# minute; Python compiles each module on first import instead.
pip_install() { "$PY" -m pip install --progress-bar off --no-compile -c "$CONSTRAINTS" "$@"; }

STAMP=$VENV/.focal_plugin_setup
WANT=$(cat "$CONSTRAINTS" "$ROOT/tools/setup.sh" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)

verify() {
  "$PY" - <<'EOF'
import torch, torchvision, mmengine, mmcv, mmdet, mmseg, mmpretrain, monai
from mmcv.ops import sigmoid_focal_loss, nms  # compiled ops load
import mmseg.models, mmpretrain.models  # their full imports (tokenizer, model index)
import focal_plugin
print(f'torch {torch.__version__}  torchvision {torchvision.__version__}  mmengine '
      f'{mmengine.__version__}  mmcv {mmcv.__version__}  mmdet {mmdet.__version__}  '
      f'mmseg {mmseg.__version__}  mmpretrain {mmpretrain.__version__}  '
      f'monai {monai.__version__}  focal_plugin {focal_plugin.__version__}')
EOF
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  step "environment was set up with these pins: verifying only"
  if verify; then
    step "done (nothing to install)"
    exit 0
  fi
  echo "verification failed: reinstalling" >&2
  rm -f "$STAMP"
fi

step "build tools (setuptools with pkg_resources for mmcv's setup.py, wheel, ninja)"
pip_install setuptools wheel ninja

step "torch, torchvision (CUDA-enabled PyPI build; runs on CPU too), mmengine, runtime deps"
pip_install torch torchvision mmengine numpy opencv-python pycocotools matplotlib scipy tqdm

step "mmcv with compiled ops (built from source on first run, then from pip's wheel cache)"
if ! "$PY" -c 'import mmcv, mmcv.ops, sys; from mmcv.ops import nms' 2>/dev/null; then
  # --no-build-isolation: mmcv's setup.py imports torch to compile its ops against the torch
  # installed above. MMCV_WITH_OPS=1 builds the C++ ops (CPU kernels; CUDA kernels only when
  # a GPU is visible or FORCE_CUDA=1).
  MMCV_WITH_OPS=1 pip_install --no-build-isolation mmcv
fi

step "mmdet, focal_plugin (editable) and test tools"
pip_install --no-build-isolation mmdet -e "$ROOT[mmdet]" pytest ruff hypothesis

step "MONAI (test-only reference for the migration table; needs only torch and numpy)"
pip_install --no-deps monai

step "MMSegmentation and MMPretrain (the losses' real clients in tests/clients; optional extras)"
# Their own dependency lists are incomplete (mmseg's tokenizer needs ftfy and regex, its table
# printer prettytable; mmpretrain's import needs einops, mat4py and model-index, which is not
# the empty PyPI stub 'modelindex'), so the runtime ones are named here, all pinned.
pip_install --no-build-isolation -e "$ROOT[mmseg,mmpretrain]"

step "verifying the stack"
verify
echo "$WANT" > "$STAMP"

step "done"
echo "Environment ready: $VENV  (activate with: source $VENV/bin/activate)"
