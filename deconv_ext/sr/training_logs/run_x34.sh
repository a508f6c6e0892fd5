#!/bin/bash
# x3 then x4, fine-tuned from the finished x2 run (every layer but the deconvolution copied); one process at a time.
# Resumable: run_x34.sh --resume (each scale continues from /work/sr_runs/xS/latest.pt)
cd /work/wt-srtrain && . /work/venv/bin/activate
while kill -0 "$(cat /work/sr_runs/x2.pid)" 2>/dev/null; do sleep 10; done
for S in 3 4; do
  init=(--init /work/sr_runs/x2/fsrcnn_x2.pt); [ "$1" = "--resume" ] && init=(--resume)
  nice -n 5 python -m deconv_ext sr train --scale $S --steps 15000 --batch 32 --patch 16 --lr 2e-3 \
      --deconv-lr-mult 0.1 --center 0.5 --shrinks 1,0.9,0.8,0.7,0.6 --data /work/sr_data/train \
      --heldout-data /work/sr_data/heldout --threads 1 --seed $S --out /work/sr_runs/x$S "${init[@]}" \
      --eval-every 2500 --log-every 500 --diag-every 2500 --ckpt-every 1000 --quiet > /work/sr_runs/x$S.out 2>&1
done
