#!/bin/bash
# pool_e192_10: distilled P0 at 192 epochs, seeds 0-2 in order (resume / skip as the others)
source /work/poolruns/common.sh
export PYTHONPATH=/work/gp0
cd /work/gp0
for seed in 0 1 2; do
  out=/work/grid/p0_e192/seed$seed
  mkdir -p $out
  [ -f $out/teacher.pt ] || cp /work/poolruns/p0/seed$seed/teacher.pt $out/teacher.pt
  [ -f $out/student.pt ] && continue
  res=""; [ -f $out/distill/last.pt ] && res="--resume"
  echo "$(date -u +%H:%M:%S) start p0 e192 seed $seed $res" >> /work/p0e192/jobs.log
  $PY -m xmodelkd_ros.training.train --recipe synthetic_scarce --stage distill --out $out --seed $seed \
     --threads 1 --no-progress $res --set $COMMON schedule.student_epochs=192 >> /work/p0e192/distill_s$seed.log 2>&1
  echo "$(date -u +%H:%M:%S) end p0 e192 seed $seed rc=$?" >> /work/p0e192/jobs.log
done
