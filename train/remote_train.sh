#!/usr/bin/env bash
# One training call on a machine reached through a narrow link (this project's GPU machine takes 64 MiB a transfer
# and 10 minutes a call): join the parts of a `train.pack` copy that have arrived, then train with the shipped
# default's recipe from a checkpoint, for a fixed number of steps: `train.pack --join`, then `train.train`.
#
#   bash train/remote_train.sh PACK INIT RUN STEPS [more train.train flags, e.g. --lr 2e-4 --seed 42]
#
# PACK   a train.pack output folder (OUT/pNNN parts; the first holds the validation people)
# INIT   the checkpoint to start from: a run's best/, or the start weights of a fresh encoder made on a machine that
#        has them: python -m train.train --encoder timm/tf_efficientnet_lite2 --pretrained --method-head \
#                      --out xfer/lite2 --start-only        (writes xfer/lite2/start, 5 MB)
# RUN    the run folder (RUN/best is the best pass by validation AUC, calibrated on the packed validation crops;
#        calibrate again on the original build's whole validation split with train.calibrate)
# STEPS  optimiser steps at batch 64 (about 11 a second on one H200 with 14 loader workers, for Lite0)
# WORKERS (environment, default 14) data-loader workers; THREADS (default 4) torch threads
set -euo pipefail
if [ $# -lt 4 ]; then
    sed -n '2,15p' "$0" >&2
    exit 2
fi
pack=$1 init=$2 run=$3 steps=$4
shift 4
python -m train.pack --join "$pack"
python -m train.train --data "$pack" --init "$init" --method-head --out "$run" --epochs 1000 --max-steps "$steps" \
    --cosine --lr 3e-4 --optimizer adamw --weight-decay 1e-4 --reconstruction-weight 0 --dense-activation 1.0 \
    --margin 1.0 --by-person --h264 0.4 --workers "${WORKERS:-14}" --threads "${THREADS:-4}" "$@"
