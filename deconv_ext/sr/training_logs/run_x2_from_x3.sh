#!/bin/bash
# x2 fine-tuned from the x3-from-scratch body, then x4 from x3 with a longer schedule (40k steps)
cd /work/main; source /work/venv/bin/activate
nice -n 19 python -m deconv_ext sr train --scale 2 --steps 15000 --batch 32 --patch 16 --lr 2e-3 \
    --deconv-lr-mult 1.0 --center 0.5 --shrinks 1,0.9,0.8,0.7,0.6 --data /work/sr_data/train \
    --heldout-data /work/sr_data/heldout --threads 1 --seed 2 --out /work/sr_runs/x2_from_x3 \
    --init /work/sr_runs/x3_scratch/fsrcnn_x3.pt --eval-every 2500 --log-every 500 --ckpt-every 1000 --quiet \
    > /work/sr_runs/x2_from_x3.out 2>&1 &
nice -n 19 python -m deconv_ext sr train --scale 4 --steps 40000 --batch 32 --patch 16 --lr 2e-3 \
    --deconv-lr-mult 1.0 --center 0.5 --shrinks 1,0.9,0.8,0.7,0.6 --data /work/sr_data/train \
    --heldout-data /work/sr_data/heldout --threads 1 --seed 4 --out /work/sr_runs/x4_from_x3_40k \
    --init /work/sr_runs/x3_scratch/fsrcnn_x3.pt --eval-every 5000 --log-every 1000 --ckpt-every 1000 --quiet \
    > /work/sr_runs/x4_from_x3_40k.out 2>&1 &
wait
