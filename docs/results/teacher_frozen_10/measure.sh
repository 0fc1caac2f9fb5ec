#!/bin/bash
# teacher_frozen_10: waits for the six networks, then scores once (compare --registered).
cd /work/gtf
export PYTHONPATH=/work/gtf
PY=/work/main/.venv/bin/python
R=/work/gtf_runs
have() { for s in 0 1 2; do [ -f $1/seed$s/$2 ] || return 1; done; }
[ "$CUT" = 1 ] || until have /work/t10/frozen teacher.pt && have /work/t10s/frozen student.pt; do sleep 60; done
[ -f $R/compare/compare.json ] && { echo "already measured"; exit 0; }
echo "$(date -u +%H:%M:%S) scoring" >> $R/jobs.log
$PY -m xmodelkd_ros.evaluation.compare --registered teacher_frozen_10 --split val --streets 124-139 --scans 2 \
  --stride 10 --seeds 0-2 \
  --teacher frozen=/work/t10/frozen/seed{seed}/teacher.pt --teacher scratch=/work/t10/scratch/seed{seed}/teacher.pt \
  --teacher pretrained=/work/t10/pretrained/seed{seed}/teacher.pt \
  --teacher pretrained_frozen=/work/t10/pretrained_frozen/seed{seed}/teacher.pt \
  --net s_frozen=/work/t10s/frozen/seed{seed}/student.pt --net s_scratch=/work/t10s/scratch/seed{seed}/student.pt \
  --net s_pretrained=/work/t10s/pretrained/seed{seed}/student.pt \
  --pair frozen:scratch --pair pretrained:scratch --pair pretrained_frozen:scratch --pair frozen:pretrained_frozen \
  --pair s_frozen:s_scratch --pair s_pretrained:s_scratch --out $R/compare --no-progress > $R/compare.log 2>&1
echo "$(date -u +%H:%M:%S) compare rc=$?" >> $R/jobs.log
