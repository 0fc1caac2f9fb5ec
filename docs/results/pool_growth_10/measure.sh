#!/bin/bash
# pool_growth_10: waits for the 12 new P0 networks (or for CUT=1, set at the cutoff), then
# P0's choice on validation and the measurement on the reserved test streets, once.
source /work/poolruns/common.sh
export PYTHONPATH=/work/gpg
cd /work/gpg
R=/work/gpg_runs
log() { echo "$(date -u +%H:%M:%S) $*" >> $R/jobs.log; }
NEW="p0_e48 p0_dlm192 p0_e384 p0_dlm384"
have() { for s in 0 1 2; do [ -f /work/grid/$1/seed$s/student.pt ] || return 1; done; }
all_new() { for n in $NEW; do have $n || return 1; done; }
[ "$CUT" = 1 ] || until all_new; do sleep 60; done
[ -f $R/measure/compare.json ] && { echo "already measured"; exit 0; }
declare -A P0=([p0e48]=/work/grid/p0_e48 [p0e96]=/work/poolruns/p0 [p0e192]=/work/grid/p0_e192
  [p0dlm192]=/work/grid/p0_dlm192 [p0e384]=/work/grid/p0_e384 [p0dlm384]=/work/grid/p0_dlm384)
declare -A P280=([e48]=/work/grid/e48/labels0.1 [e96]=/work/grid/e96/labels0.1 [e192]=/work/grid/e192/labels0.1
  [dlm192]=/work/grid/dlm192/labels0.1 [e384]=/work/grid/e384/labels0.1 [dlm384]=/work/grid/dlm384/labels0.1)
CANDS=""; NETS=""; PAIRS=""
for c in e48 e96 e192 dlm192 e384 dlm384; do
  d=${P0[p0$c]}
  if [ -f $d/seed0/student.pt ] && [ -f $d/seed1/student.pt ] && [ -f $d/seed2/student.pt ]; then
    CANDS="$CANDS --candidate p0$c:distilled=$d"
    NETS="$NETS --net p0_$c=$d/seed{seed}/student.pt --net p280_$c=${P280[$c]}/seed{seed}/student.pt"
    PAIRS="$PAIRS --pair p280_$c:p0_$c"
  else log "p0$c lacks a seed: enters no grid"; fi
done
log "P0 choice on validation 140-149"
$PY -m xmodelkd_ros.evaluation.choose --arms distilled,baseline --label-fraction 0.1 --seeds 3 \
  --val-seeds 140-149 --val-scans 4 --val-stride 10 --no-progress $CANDS \
  --candidate b192:baseline=/work/grid/e192 --out $R/choice > $R/choice.log 2>&1
log "choice rc=$?"
pick=$($PY -c "import json; print(json.load(open('$R/choice/choice.json'))['choice']['distilled'])") || { log "no choice"; exit 1; }
log "P0 chose $pick; measuring on 9176-9207 x 2"
$PY -m xmodelkd_ros.evaluation.compare --registered pool_growth_10 --split test --streets 9176-9207 \
  --scans 2 --stride 10 --seeds 0-2 --net p280=/work/grid/dlm384/labels0.1/seed{seed}/student.pt \
  --net p0=${P0[$pick]}/seed{seed}/student.pt --pair p280:p0 $NETS $PAIRS \
  --out $R/measure --no-progress > $R/measure.log 2>&1
log "measure rc=$?"
