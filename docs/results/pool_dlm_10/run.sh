#!/bin/bash
# one worker of the pool_dlm_10 runs: waits for the PIDs given in WAIT (space-separated)
# to exit, then trains each arg EPOCHS:SEED (distill with loss.distill_lasermix=true);
# a finished job is skipped, a cut one resumes from its last.pt
source /work/poolruns/common.sh
export PYTHONPATH=/work/gdlm2
cd /work/gdlm2
for pid in $WAIT; do while kill -0 $pid 2>/dev/null; do sleep 30; done; done
for job in "$@"; do
  IFS=: read ep seed <<< "$job"
  out=/work/grid/dlm$ep/labels0.1/seed$seed
  mkdir -p $out
  [ -f $out/teacher.pt ] || cp /work/poolruns/p280/seed$seed/teacher.pt $out/teacher.pt
  if [ -f $out/student.pt ]; then echo "$(date -u +%H:%M:%S) skip dlm$job (done)" >> /work/gdlm_runs/jobs.log; continue; fi
  res=""; [ -f $out/distill/last.pt ] && res="--resume"
  echo "$(date -u +%H:%M:%S) start dlm$job $res" >> /work/gdlm_runs/jobs.log
  $PY -m xmodelkd_ros.training.train --recipe synthetic_scarce --stage distill --out $out --seed $seed \
     --threads 1 --no-progress $res --set $COMMON $(pool_sets 280) schedule.student_epochs=$ep \
     loss.distill_lasermix=true >> /work/gdlm_runs/dlm${ep}_s${seed}.log 2>&1
  echo "$(date -u +%H:%M:%S) end dlm$job rc=$?" >> /work/gdlm_runs/jobs.log
done
