#!/bin/bash
# x3 and x4 fine-tuned from the x2 that was fine-tuned from the x3-from-scratch body (every layer but the
# deconvolution copied), deconvolution at lr/1, 15,000 steps each, in parallel (one thread each)
cd /work/main; source /work/venv/bin/activate
for S in 3 4; do
  python -m deconv_ext sr train --scale $S --steps 15000 --batch 32 --patch 16 --lr 2e-3 \
      --deconv-lr-mult 1.0 --center 0.5 --shrinks 1,0.9,0.8,0.7,0.6 --data /work/sr_data/train \
      --heldout-data /work/sr_data/heldout --threads 1 --seed $S --out /work/sr_runs/x${S}_round2 \
      --init /work/sr_runs/x2_from_x3/fsrcnn_x2.pt --eval-every 2500 --log-every 500 --ckpt-every 1000 --quiet \
      "$@" > /work/sr_runs/x${S}_round2.out 2>&1 &
done
wait
