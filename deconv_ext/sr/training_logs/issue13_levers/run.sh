#!/bin/bash
# usage: run.sh NAME SCALE STEPS [extra args]
cd /work/main; source /work/venv/bin/activate
name=$1; S=$2; steps=$3; shift 3
nice -n 5 python -m deconv_ext sr train --scale $S --steps $steps --lr 2e-3 \
    --deconv-lr-mult 0.1 --center 0.5 --shrinks 1,0.9,0.8,0.7,0.6 --data /work/sr_data/train \
    --heldout-data /work/sr_data/heldout --threads 1 --seed $S --out /work/sr_exp/$name \
    --eval-every 1000 --log-every 500 --ckpt-every 1000 --quiet "$@" > /work/sr_exp/$name.out 2>&1
