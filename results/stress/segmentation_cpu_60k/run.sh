#!/usr/bin/env bash
# The long segmentation pair of issue 13 (U-Net, 8 base channels, gamma = alpha = 0.5,
# noise 0, 400 epochs x 157 steps = 62.8k SGD steps of the real MNIST 10k split), resumable:
# every new checkpoint is copied to snapshots/ (committed), and re-running this script on a
# fresh clone continues each cell from there.
#   NOISE=0.5 bash results/stress/segmentation_cpu_60k/run.sh   # the noise 0.5 pair
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../../.."
NOISE=${NOISE:-0}
export FOCAL_MNIST_T10K=${FOCAL_MNIST_T10K:-../shared/data/mnist-t10k}  # read by the configs
OUT=results/stress/segmentation_cpu_60k/noise${NOISE}
FOCAL_PLUGIN_FUSED=compile OMP_NUM_THREADS=1 ${PYTHON:-.venv/bin/python} tools/sweep.py \
  'configs/stress/mnist_segmentation/unet-c8_sgd-30e_mnist-t10k-seg_cpu_{mode}.py' \
  --modes none exact --noises "$NOISE" --max-epochs 400 --jobs 2 --threads-per-job 1 \
  --work-root "work_dirs/sweeps/seg_60k" --out "$OUT" --snapshot-dir "$OUT/snapshots" \
  --plot curves
