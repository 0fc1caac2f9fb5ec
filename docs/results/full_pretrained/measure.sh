#!/bin/bash
# full_pretrained: waits for the 18 candidate networks and the 6 teachers; the teacher
# ablation on validation; the choice (validation only) and, where an arm chose 256, its
# 384 candidate; then the final choice and the measurement, once.
source /work/gfull_runs/common.sh
cd /work/gfull
have() { for s in 0 1 2; do [ -f $G/$1/seed$s/$2 ] || return 1; done; }
grid() { for L in 96 160 256; do have L$L/labels1 student.pt && have L$L/labels1 baseline.pt || return 1; done; }
until grid && have teachers_tp teacher.pt && have teachers_tt teacher.pt; do sleep 60; done
[ -f $R/choose/measure.json ] && { echo "already measured"; exit 0; }
if [ ! -f $R/teachers/compare.json ]; then
  log "teacher ablation (validation 180-199)"
  $PY -m xmodelkd_ros.evaluation.compare --split val --streets 180-199 --scans 4 --stride 10 --seeds 0-2 \
    --teacher pretrained=$G/teachers_tp/seed{seed}/teacher.pt --teacher tiny=$G/teachers_tt/seed{seed}/teacher.pt \
    --pair pretrained:tiny --out $R/teachers --no-progress > $R/teachers.log 2>&1
  log "teacher ablation rc=$?"
fi
VAL="--arms distilled,baseline --label-fraction 1.0 --seeds 3 --val-seeds 180-199 --val-scans 4 --val-stride 10 --no-progress"
CANDS="--candidate L96=$G/L96 --candidate L160=$G/L160 --candidate L256=$G/L256"
log "validation look"
$PY -m xmodelkd_ros.evaluation.choose $VAL $CANDS --out $R/look > $R/look.log 2>&1 || { log "look failed"; exit 1; }
edge=$($PY -c "import json; c=json.load(open('$R/look/choice.json'))['choice']; print(' '.join(a for a in ('distilled','baseline') if c[a]=='L256'))")
jobs=(); arms=""
for arm in $edge; do
  [ $arm = distilled ] && k=s || k=b
  for s in 0 1 2; do jobs+=("$k:384:$s"); done; arms="$arms,$arm"
done
if [ -n "$arms" ]; then
  log "chosen at the grid's edge (256):$arms -> 384 candidates"
  n=${#jobs[@]}; half=$(( (n + 1) / 2 ))
  NOWAIT=1 $R/run.sh "${jobs[@]:0:$half}" & NOWAIT=1 $R/run.sh "${jobs[@]:$half}"; wait
  CANDS="$CANDS --candidate L384:${arms#,}=$G/L384"
fi
log "choosing and measuring (9128-9143)"
$PY -m xmodelkd_ros.evaluation.choose $VAL $CANDS --measure --measure-all --test-seeds 9128-9143 \
  --test-scans 4 --test-stride 10 --out $R/choose 2>&1 | tee $R/choose.log
log "choose rc=${PIPESTATUS[0]}"
