#!/bin/bash
# x4 from scratch with the x2 recipe (lr 3e-3, deconvolution lr/10, mean shift, scale augmentation)
cd /work/main; source /work/venv/bin/activate
exec nice -n 19 python -m deconv_ext sr train --scale 4 --steps 60000 --batch 32 --patch 16 --lr 3e-3 \
    --deconv-lr-mult 0.1 --center 0.5 --shrinks 1,0.9,0.8,0.7,0.6 --data /work/sr_data/train \
    --heldout-data /work/sr_data/heldout --threads 1 --seed 4 --out /work/sr_runs/x4_scratch \
    --eval-every 5000 --log-every 1000 --ckpt-every 1000 --quiet "$@" > /work/sr_runs/x4_scratch.out 2>&1
