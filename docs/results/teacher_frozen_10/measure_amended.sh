#!/bin/bash
# teacher_frozen_10 (as amended): waits for the frozen and scratch arms' six networks each,
# then scores once (compare --registered) the two kept pairs.
cd /work/gtf
export PYTHONPATH=/work/gtf OMP_NUM_THREADS=1
PY=/work/main/.venv/bin/python
R=/work/gtf_runs; mkdir -p $R
have() { for s in 0 1 2; do [ -f $1/seed$s/$2 ] || return 1; done; }
ready() { have /work/t10/frozen teacher.pt && have /work/t10s/frozen student.pt && have /work/t10/scratch teacher.pt && have /work/t10s/scratch student.pt; }
[ "$CUT" = 1 ] || until ready; do sleep 60; done
[ -f $R/compare/compare.json ] && { echo "already measured"; exit 0; }
echo "$(date -u +%H:%M:%S) scoring" >> $R/jobs.log
$PY -m xmodelkd_ros.evaluation.compare --registered teacher_frozen_10 --split val --streets 124-139 --scans 2 \
  --stride 10 --seeds 0-2 \
  --teacher frozen=/work/t10/frozen/seed{seed}/teacher.pt --teacher scratch=/work/t10/scratch/seed{seed}/teacher.pt \
  --net s_frozen=/work/t10s/frozen/seed{seed}/student.pt --net s_scratch=/work/t10s/scratch/seed{seed}/student.pt \
  --pair frozen:scratch --pair s_frozen:s_scratch --out $R/compare --no-progress > $R/compare.log 2>&1
echo "$(date -u +%H:%M:%S) compare rc=$?" >> $R/jobs.log
