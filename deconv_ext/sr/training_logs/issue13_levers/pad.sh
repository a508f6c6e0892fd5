#!/bin/bash
# usage: pad.sh NAME SCALE PAD STEPS [extra]
cd /work/main; source /work/venv/bin/activate
name=$1; S=$2; P=$3; steps=$4; shift 4
DPAD=$P nice -n 5 python deconv_ext/sr/training_logs/issue13_levers/pad_run.py sr train --scale $S --steps $steps --batch 32 --patch 16 --lr 2e-3 \
    --deconv-lr-mult 1.0 --center 0.5 --shrinks 1,0.9,0.8,0.7,0.6 --data /work/sr_data/train \
    --heldout-data /work/sr_data/heldout --threads 1 --seed $S --out /work/sr_exp/$name \
    --init /work/main/deconv_ext/sr/weights/fsrcnn_x2.pt --eval-every 1000 --log-every 1000 --ckpt-every 1000 --quiet "$@" > /work/sr_exp/$name.out 2>&1
