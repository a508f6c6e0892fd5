#!/bin/bash
# usage: cap.sh NAME SCALE CAP STEPS [extra]
cd /work/main; source /work/venv/bin/activate
name=$1; S=$2; C=$3; steps=$4; shift 4
CAP=$C nice -n 19 python deconv_ext/sr/training_logs/issue13_levers/cap_run.py sr train --scale $S --steps $steps --batch 32 --patch 16 --lr ${LR:-3e-3} \
    --deconv-lr-mult 0.1 --center 0.5 --shrinks 1,0.9,0.8,0.7,0.6 --data /work/sr_data/train \
    --heldout-data /work/sr_data/heldout --threads 1 --seed 3 --out /work/sr_exp/$name \
    --eval-every 5000 --log-every 1000 --ckpt-every 1000 --quiet "$@" > /work/sr_exp/$name.out 2>&1
