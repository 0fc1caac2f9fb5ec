#!/bin/bash
# pilot (validation streets 150-159 only, one seed): distilled + LaserMix at E48 in the pool regime
source /work/poolruns/common.sh
export PYTHONPATH=/work/gdlm
cd /work/gdlm
echo "$(date -u +%H:%M:%S) start" >> /work/dlm_pilot/jobs.log
$PY -m xmodelkd_ros.training.train --recipe synthetic_scarce --stage distill --out /work/dlm_pilot/seed0 --seed 0 \
  --threads 1 --no-progress --set $COMMON $(pool_sets 280) schedule.student_epochs=48 loss.distill_lasermix=true \
  > /work/dlm_pilot/distill_s0.log 2>&1
echo "$(date -u +%H:%M:%S) end rc=$?" >> /work/dlm_pilot/jobs.log
