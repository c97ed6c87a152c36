#!/usr/bin/env bash
# Multi-GPU (or multi-node) training with torchrun, MMDetection-style:
#   bash tools/dist_train.sh CONFIG NUM_GPUS [train.py options ...]
# e.g. bash tools/dist_train.sh configs/stress/mnist_segmentation/unet_sgd-1000e_mnist-seg_none.py 4
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node.
# GPU only: one CUDA device per process (MMEngine's pytorch launcher calls
# torch.cuda.set_device). The CPU (gloo) path the tests use: docs/hook.md, "Distributed".
# PYTHON selects the interpreter (default: .venv/bin/python when it exists, else python).
set -euo pipefail

usage() {
    echo "usage: bash tools/dist_train.sh CONFIG NUM_GPUS [tools/train.py options ...]"
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
}
case ${1:-} in
    -h|--help) usage; exit 0 ;;
esac
if [ "$#" -lt 2 ]; then
    usage >&2
    exit 2
fi
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python; fi
fi

PYTHONPATH="$(dirname "$0")/..${PYTHONPATH:+:$PYTHONPATH}" \
"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$(dirname "$0")/train.py" \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
