#!/bin/bash
# teacher_tiny_wide_10: waits for the six tiny_wide networks (or CUT=1 at the cutoff), then
# scores once (compare --registered) against this session's scratch and wide networks.
cd /work/main
export OMP_NUM_THREADS=1
PY=/work/main/.venv/bin/python
R=/work/q2/measure; mkdir -p $R
have() { for s in 0 1 2; do [ -f $1/seed$s/$2 ] || return 1; done; }
[ "$CUT" = 1 ] || until have /work/t10/tiny_wide teacher.pt && have /work/t10s/tiny_wide student.pt; do sleep 30; done
[ -f $R/compare/compare.json ] && { echo "already measured"; exit 0; }
echo "$(date -u +%H:%M:%S) scoring" >> $R/jobs.log
$PY -m xmodelkd_ros.evaluation.compare --registered teacher_tiny_wide_10 --split val --streets 228-243 --scans 2 \
  --stride 10 --seeds 0-2 \
  --teacher tiny_wide=/work/t10/tiny_wide/seed{seed}/teacher.pt --teacher scratch=/work/t10/scratch/seed{seed}/teacher.pt \
  --teacher wide=/work/t10/wide/seed{seed}/teacher.pt \
  --net s_tiny_wide=/work/t10s/tiny_wide/seed{seed}/student.pt --net s_scratch=/work/t10s/scratch/seed{seed}/student.pt \
  --net s_wide=/work/t10s/wide/seed{seed}/student.pt \
  --pair tiny_wide:scratch --pair wide:tiny_wide --pair s_tiny_wide:s_scratch --pair s_wide:s_tiny_wide \
  --out $R/compare --no-progress > $R/compare.log 2>&1
echo "$(date -u +%H:%M:%S) compare rc=$?" >> $R/jobs.log
