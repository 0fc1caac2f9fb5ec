#!/bin/bash
# teacher_wide_10: waits for its six networks and teacher_frozen_10's, then scores once
# (compare --registered) and probes the wide teachers' heads.
cd /work/gtw
export PYTHONPATH=/work/gtw
export OMP_NUM_THREADS=1
PY=/work/main/.venv/bin/python
R=/work/gtw_runs; mkdir -p $R
have() { for s in 0 1 2; do [ -f $1/seed$s/$2 ] || return 1; done; }
ready() { have /work/t10/wide teacher.pt && have /work/t10s/wide student.pt && have /work/t10/frozen teacher.pt && have /work/t10s/frozen student.pt; }
[ "$CUT" = 1 ] || until ready; do sleep 60; done
[ -f $R/compare/compare.json ] && { echo "already measured"; exit 0; }
echo "$(date -u +%H:%M:%S) scoring" >> $R/jobs.log
$PY -m xmodelkd_ros.evaluation.compare --registered teacher_wide_10 --split val --streets 212-227 --scans 2 \
  --stride 10 --seeds 0-2 \
  --teacher wide=/work/t10/wide/seed{seed}/teacher.pt --teacher frozen=/work/t10/frozen/seed{seed}/teacher.pt \
  --teacher scratch=/work/t10/scratch/seed{seed}/teacher.pt \
  --net s_wide=/work/t10s/wide/seed{seed}/student.pt --net s_frozen=/work/t10s/frozen/seed{seed}/student.pt \
  --net s_scratch=/work/t10s/scratch/seed{seed}/student.pt \
  --pair wide:frozen --pair wide:scratch --pair s_wide:s_frozen --pair s_wide:s_scratch \
  --out $R/compare --no-progress > $R/compare.log 2>&1
echo "$(date -u +%H:%M:%S) compare rc=$?" >> $R/jobs.log
F="wide_head0=head:/work/t10/wide/seed0/teacher.pt,wide_head1=head:/work/t10/wide/seed1/teacher.pt,wide_head2=head:/work/t10/wide/seed2/teacher.pt"
OMP_NUM_THREADS=1 $PY -m xmodelkd_ros.evaluation.image_probe --out $R/probe --no-progress --cache-dir /work/probe_cache \
  --features "$F" > $R/probe.log 2>&1
echo "$(date -u +%H:%M:%S) probe rc=$?" >> $R/jobs.log
