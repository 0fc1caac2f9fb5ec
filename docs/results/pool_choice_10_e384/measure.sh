#!/bin/bash
# waits for the nine E384 networks, then the pre-registered choice and measurement (once)
source /work/poolruns/common.sh
export PYTHONPATH=/work/g4m
cd /work/g4m
d=/work/grid/e384/labels0.1
while true; do
  n=0
  for s in 0 1 2; do for f in student.pt lasermix.pt baseline.pt; do [ -f $d/seed$s/$f ] && n=$((n+1)); done; done
  [ $n = 9 ] && break
  sleep 60
done
[ -f /work/g384/choose/measure.json ] && { echo "already measured"; exit 0; }
mkdir -p /work/g384/choose/scores && cp -rn /work/grid/choose/scores/val /work/g384/choose/scores/
echo "$(date -u +%H:%M:%S) all nine E384 networks present; choosing" >> /work/g384/jobs.log
$PY -m xmodelkd_ros.evaluation.choose --arms distilled,lasermix,baseline --label-fraction 0.1 --seeds 3 \
  --candidate e48=/work/grid/e48 --candidate e96=/work/grid/e96 --candidate e192=/work/grid/e192 \
  --candidate e384=/work/grid/e384 --val-seeds 140-149 --val-scans 4 --val-stride 10 \
  --measure --measure-all --test-seeds 9096-9111 --test-scans 4 --test-stride 10 \
  --out /work/g384/choose --no-progress 2>&1 | tee /work/g384/choose.log
echo "$(date -u +%H:%M:%S) choose rc=${PIPESTATUS[0]}" >> /work/g384/jobs.log
