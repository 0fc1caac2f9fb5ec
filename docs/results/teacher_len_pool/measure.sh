#!/bin/bash
# teacher_len_pool: waits for the six networks, then the pre-registered comparison, once
source /work/poolruns/common.sh
export PYTHONPATH=/work/gt192
cd /work/gt192
have() { for s in 0 1 2; do [ -f /work/grid/t192/labels0.1/seed$s/$1 ] || return 1; done; }
until have teacher.pt && have student.pt; do sleep 60; done
[ -f /work/gt192_runs/compare/compare.json ] && { echo "already measured"; exit 0; }
echo "$(date -u +%H:%M:%S) scoring" >> /work/gt192_runs/jobs.log
$PY -m xmodelkd_ros.evaluation.compare --split val --streets 170-179 --scans 4 --stride 10 --seeds 0-2 \
  --teacher t192=/work/grid/t192/labels0.1/seed{seed}/teacher.pt \
  --teacher t48=/work/poolruns/p280/seed{seed}/teacher.pt \
  --net s_t192=/work/grid/t192/labels0.1/seed{seed}/student.pt \
  --net s_t48=/work/grid/e192/labels0.1/seed{seed}/student.pt \
  --net lasermix=/work/grid/e192/labels0.1/seed{seed}/lasermix.pt \
  --pair t192:t48 --pair s_t192:s_t48 --pair s_t192:lasermix \
  --out /work/gt192_runs/compare --no-progress > /work/gt192_runs/compare.log 2>&1
echo "$(date -u +%H:%M:%S) compare rc=$?" >> /work/gt192_runs/jobs.log
