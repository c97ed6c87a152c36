#!/usr/bin/env bash
# Collect what an offline machine that already has torch (and numpy, opencv, matplotlib, as GPU
# images do) needs to run the hook, the loss modules and the stress tests: this package as a
# wheel, MMEngine and MMEngine's small pure-Python dependencies. Run it where PyPI is reachable,
# carry DIR over, then on the offline machine:
#
#     pip install --no-index --no-deps DIR/*.whl
#
# --no-deps on purpose: MMEngine declares opencv-python, and a machine with
# opencv-python-headless (the usual GPU image) would otherwise make pip look for the other
# opencv; what MMEngine needs beyond the machine's own packages is exactly DIR's content.
#
#   bash tools/wheelhouse.sh DIR [--python-version X.Y] [--platform TAG]
#
# --python-version: the offline machine's Python (default: this one's); --platform: its wheel
# platform for the one compiled dependency, PyYAML (default manylinux2014_x86_64).
# Versions come from requirements/constraints.txt. Prints the wheels and their total size.
set -euo pipefail

# usage [RC]: on stdout and exit 0 when asked for (--help), else on stderr and exit 2
usage() {
  local rc=${1:-2}
  {
    echo "usage: bash tools/wheelhouse.sh DIR [--python-version X.Y] [--platform TAG]"
    [ "$rc" != 0 ] || sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
  } >&"$(( rc == 0 ? 1 : 2 ))"
  exit "$rc"
}
case ${1:-} in -h|--help) usage 0 ;; esac
[ $# -ge 1 ] && [ "${1#-}" = "$1" ] || usage
DIR=$1; shift
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=python3
PYVER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
PLATFORM=manylinux2014_x86_64
while [ $# -gt 0 ]; do
  case $1 in
    --python-version) PYVER=$2; shift 2 ;;
    --platform) PLATFORM=$2; shift 2 ;;
    -h|--help) usage 0 ;;
    *) usage ;;
  esac
done

# MMEngine's run-time dependencies that such a machine lacks (numpy, opencv, matplotlib and
# torch it has); tomli only below Python 3.11 (yapf needs it there).
PACKAGES="mmengine addict pyyaml rich markdown-it-py mdurl pygments termcolor yapf platformdirs"
case $PYVER in 3.8|3.9|3.10) PACKAGES="$PACKAGES tomli" ;; esac

pinned() {  # the constraints.txt pin of a package, else the name alone
  local line
  line=$(grep -i -E "^$(echo "$1" | sed 's/[-_]/[-_]/g')==" "$ROOT/requirements/constraints.txt" || true)
  echo "${line:-$1}"
}

mkdir -p "$DIR"
echo "[wheelhouse] focal_plugin from $ROOT"
"$PY" -m pip wheel --quiet --no-deps --no-build-isolation -w "$DIR" "$ROOT"
SPECS=$(for p in $PACKAGES; do pinned "$p"; done | tr '\n' ' ')
echo "[wheelhouse] $SPECS(Python $PYVER, $PLATFORM)"
# shellcheck disable=SC2086
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYVER" \
  --platform "$PLATFORM" --platform any --implementation cp -d "$DIR" $SPECS
ls -1 "$DIR"
echo "[wheelhouse] $(ls "$DIR"/*.whl | wc -l) wheels, $(du -sh "$DIR" | cut -f1) in $DIR"
