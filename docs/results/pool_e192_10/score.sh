#!/bin/bash
# pool_e192_10: the pre-registered validation comparison, once
source /work/poolruns/common.sh
export PYTHONPATH=/work/gp0
cd /work/gp0
$PY -m xmodelkd_ros.evaluation.compare --split val --streets 160-169 --scans 4 --stride 10 --seeds 0-2 \
  --net p280=/work/grid/e192/labels0.1/seed{seed}/student.pt \
  --net p0=/work/grid/p0_e192/seed{seed}/student.pt \
  --pair p280:p0 --out /work/p0e192/compare --no-progress 2>&1 | tee /work/p0e192/compare.log
