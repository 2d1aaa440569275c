#!/usr/bin/env bash
# Rebuild the bundled demo model and its accuracy-compute curve:
#   data/demo/tiny_demo/                 model folder: the `tiny` preset trained from scratch on
#                                        data/calvin_sample/training (model.safetensors, config.json, tokenizer/)
#                                        and its calibration.npz (criterion values) on the same training split
#   docs/accuracy_compute.{png,md,json}  static exits vs dynamic budgets, held-out validation split + training
# A few minutes on a 2-core CPU. Pass extra `deer-ros train` options to override the recipe (e.g. --seed 1).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${DEER_ROS_PYTHON:-$root/.venv/bin/python}"

# From scratch there is no pretrained CLIP or MPT: everything trains (--train-vision --train-llm), the
# cross-attention gates start open (--xattn-gate-init; closed gates never let the images in), heads use the
# full learning rate, and the rate decays (cosine; a constant 1.5e-3 was unstable in this short run).
# One torch thread: on a shared 2-core machine a second one mostly spin-waits.
"$py" -m deer_ros.cli train --model tiny --dataset data/calvin_sample --split training \
  --joint-epochs 24 --head-epochs 2 --batch-size 8 --lr 1e-3 --head-lr-scale 1 --head-stage-lr 2.5e-4 \
  --warmup 50 --schedule cosine --train-vision --train-llm --xattn-gate-init 0.5 --seed 0 --cpu-threads 1 \
  --log-every 1000 \
  --out build/demo/tiny_demo.pt --state build/demo/tiny_demo.train.pt --calibrate "$@"

# Training writes our single-file checkpoint; the bundled model is the relocatable folder made from it.
"$py" -m deer_ros.cli convert --checkpoint build/demo/tiny_demo.pt \
  --calibration build/demo/tiny_demo_calibration.npz --out data/demo/tiny_demo

"$py" -m deer_ros.cli train curve --checkpoint data/demo/tiny_demo \
  --calibration data/demo/tiny_demo/calibration.npz --dataset data/calvin_sample \
  --split validation --split training --budgets 8 --cpu-threads 1 --out-dir docs --name accuracy_compute
