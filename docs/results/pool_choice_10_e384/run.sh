#!/bin/bash
# one worker of the pool_choice_10_e384 runs: each arg is STAGE:SEED (384 epochs of 20 steps).
# A job whose folder has a finished network is skipped; one with a last.pt resumes.
source /work/poolruns/common.sh
export PYTHONPATH=/work/g4
cd /work/g4
ep=384
for job in "$@"; do
  IFS=: read st seed <<< "$job"
  out=/work/grid/e$ep/labels0.1/seed$seed
  mkdir -p $out
  [ -f $out/teacher.pt ] || cp /work/poolruns/p280/seed$seed/teacher.pt $out/teacher.pt
  case $st in distill) net=student.pt;; lasermix) net=lasermix.pt;; baseline) net=baseline.pt;; esac
  if [ -f $out/$net ]; then echo "$(date -u +%H:%M:%S) skip $job (done)" >> /work/g384/jobs.log; continue; fi
  if [ $st = baseline ]; then pool=0; else pool=280; fi
  res=""; [ -f $out/$st/last.pt ] && res="--resume"
  echo "$(date -u +%H:%M:%S) start $job $res" >> /work/g384/jobs.log
  $PY -m xmodelkd_ros.training.train --recipe synthetic_scarce --stage $st --out $out --seed $seed \
     --threads 1 --no-progress $res --set $COMMON $(pool_sets $pool) schedule.student_epochs=$ep schedule.control_epochs=$ep \
     >> /work/g384/${st}_e${ep}_s${seed}.log 2>&1
  echo "$(date -u +%H:%M:%S) end $job rc=$?" >> /work/g384/jobs.log
done
