#!/bin/bash
# pool_dlm_10: waits for the six dlm networks and the pool_choice_10_e384 measurement,
# trains dlm96 when the rule asks for it (run.sh: training code of /work/gdlm2), then the
# choice and the measurement (once), scored with the code of /work/gdlm_m (48948da)
source /work/poolruns/common.sh
export PYTHONPATH=/work/gdlm_m
cd /work/gdlm_m
log() { echo "$(date -u +%H:%M:%S) $*" >> /work/gdlm_runs/jobs.log; }
have() { for s in 0 1 2; do [ -f /work/grid/$1/labels0.1/seed$s/student.pt ] || return 1; done; }
until have dlm192 && have dlm384 && [ -f /work/g384/choose/measure.json ]; do sleep 60; done
[ -f /work/gdlm_runs/choose/measure.json ] && { echo "already measured"; exit 0; }
log "dlm192 and dlm384 finished; validation look dlm192 vs dlm384"
$PY -m xmodelkd_ros.evaluation.compare --split val --streets 140-149 --scans 4 --seeds 0-2 \
  --net dlm192=/work/grid/dlm192/labels0.1/seed{seed}/student.pt \
  --net dlm384=/work/grid/dlm384/labels0.1/seed{seed}/student.pt \
  --pair dlm384:dlm192 --out /work/gdlm_runs/look --no-progress > /work/gdlm_runs/look.log 2>&1
longer=$($PY -c "import json; d=json.load(open('/work/gdlm_runs/look/compare.json')); print(int(d['pairs']['dlm384 - dlm192']['mean'] > 0))" 2>>/work/gdlm_runs/look.log)
extra=""
if [ "$longer" = 0 ]; then
  log "dlm192 >= dlm384 on validation: dlm96 trains (rule)"
  WAIT="" /work/gdlm_runs/run.sh 96:0 96:2 & WAIT="" /work/gdlm_runs/run.sh 96:1; wait
  extra="--candidate dlm96:distilled=/work/grid/dlm96"
elif [ "$longer" != 1 ]; then log "validation look failed (look.log)"; exit 1; fi
log "choosing"
$PY -m xmodelkd_ros.evaluation.choose --arms distilled,lasermix,baseline --label-fraction 0.1 --seeds 3 \
  --candidate e48=/work/grid/e48 --candidate e96=/work/grid/e96 $extra --candidate e192=/work/grid/e192 \
  --candidate dlm192:distilled=/work/grid/dlm192 --candidate e384=/work/grid/e384 \
  --candidate dlm384:distilled=/work/grid/dlm384 --val-seeds 140-149 --val-scans 4 --val-stride 10 \
  --measure --measure-all --test-seeds 9112-9127 --test-scans 4 --test-stride 10 \
  --out /work/gdlm_runs/choose --no-progress 2>&1 | tee /work/gdlm_runs/choose.log
log "choose rc=${PIPESTATUS[0]}"
