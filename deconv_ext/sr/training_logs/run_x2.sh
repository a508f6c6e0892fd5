#!/bin/bash
# x2 long run (fixed recipe); resumable: add --resume to continue from /work/sr_runs/x2/latest.pt
cd /work/wt-srtrain && . /work/venv/bin/activate
exec nice -n 5 python -m deconv_ext sr train --scale 2 --steps 100000 --batch 32 --patch 16 --lr 3e-3 \
    --deconv-lr-mult 0.1 --center 0.5 --shrinks 1,0.9,0.8,0.7,0.6 --data /work/sr_data/train \
    --heldout-data /work/sr_data/heldout --threads 1 --seed 0 --out /work/sr_runs/x2 \
    --eval-every 2000 --log-every 500 --diag-every 2000 --ckpt-every 1000 --quiet "$@"
