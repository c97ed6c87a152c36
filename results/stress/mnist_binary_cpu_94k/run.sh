#!/usr/bin/env bash
# MNIST binary classification at the published step count (issue 13, part 2): LeNet, SGD,
# the real MNIST 10k split, 600 epochs x 157 steps = 94.2k SGD steps (the study: 100 epochs
# x 938 steps = 93.8k). The original loss ('none') at gamma 0.7 and 0.9 x TH 0, 2, 4, 6, 8.
# Resumable: every new checkpoint is copied to snapshots/ (committed), and re-running this
# script on a fresh clone continues each cell from there.
#   MODES=exact GAMMAS=0.7 THRESHOLDS="0 2" bash results/stress/mnist_binary_cpu_94k/run.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../../.."
MODES=${MODES:-none}
GAMMAS=${GAMMAS:-0.7 0.9}
THRESHOLDS=${THRESHOLDS:-0 2 4 6 8}
OUT=${OUT:-results/stress/mnist_binary_cpu_94k}
export FOCAL_MNIST_T10K=${FOCAL_MNIST_T10K:-../shared/data/mnist-t10k}  # read by the configs
# shellcheck disable=SC2086  # word splitting of the lists is intended
FOCAL_PLUGIN_FUSED=compile OMP_NUM_THREADS=1 ${PYTHON:-.venv/bin/python} tools/sweep.py \
  'configs/stress/mnist_binary/lenet_sgd-600e_mnist-t10k-binary_cpu_{mode}.py' \
  --modes $MODES --gammas $GAMMAS --thresholds $THRESHOLDS --noises 0 \
  --jobs "${JOBS:-2}" --threads-per-job 1 \
  --work-root "work_dirs/sweeps/mnist_94k" --out "$OUT/$MODES" --snapshot-dir "$OUT/$MODES/snapshots" \
  --plot curves
