#!/bin/bash
# one worker of the teacher_len_pool runs: waits until pool_dlm_10's measure script logs
# "choosing" (its training is over), then each arg STAGE:SEED (teacher or distill, 192
# epochs x 20 steps, P280) in /work/grid/t192/labels0.1/seed<k>; a distill job waits for
# its teacher; a finished job is skipped, a cut one resumes from its last.pt
source /work/poolruns/common.sh
export PYTHONPATH=/work/gt192
cd /work/gt192
log() { echo "$(date -u +%H:%M:%S) $*" >> /work/gt192_runs/jobs.log; }
until grep -q "choosing" /work/gdlm_runs/jobs.log 2>/dev/null; do sleep 60; done
for job in "$@"; do
  IFS=: read st seed <<< "$job"
  out=/work/grid/t192/labels0.1/seed$seed
  mkdir -p $out
  case $st in teacher) net=teacher.pt;; distill) net=student.pt;; esac
  if [ -f $out/$net ]; then log "skip $job (done)"; continue; fi
  if [ $st = distill ]; then until [ -f $out/teacher.pt ]; do sleep 60; done; fi
  res=""; [ -f $out/$st/last.pt ] && res="--resume"
  log "start $job $res"
  $PY -m xmodelkd_ros.training.train --recipe synthetic_scarce --stage $st --out $out --seed $seed \
     --threads 1 --no-progress $res --set $COMMON $(pool_sets 280) schedule.teacher_epochs=192 \
     schedule.student_epochs=192 >> /work/gt192_runs/${st}_s${seed}.log 2>&1
  log "end $job rc=$?"
done
