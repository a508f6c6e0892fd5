#!/bin/bash
# x4 fine-tuned from the x3-from-scratch weights (every layer but the deconvolution), deconvolution at lr/1
cd /work/main; source /work/venv/bin/activate
exec python -m deconv_ext sr train --scale 4 --steps 15000 --batch 32 --patch 16 --lr 2e-3 \
    --deconv-lr-mult 1.0 --center 0.5 --shrinks 1,0.9,0.8,0.7,0.6 --data /work/sr_data/train \
    --heldout-data /work/sr_data/heldout --threads 1 --seed 4 --out /work/sr_runs/x4_from_x3 \
    --init /work/sr_runs/x3_scratch/fsrcnn_x3.pt --eval-every 2500 --log-every 500 --ckpt-every 1000 --quiet \
    > /work/sr_runs/x4_from_x3.out 2>&1
