#!/bin/bash
# full_pretrained, reordered for its cutoff (the end of this session, 2026-12-05): the
# grid's students and baselines first, the validation look as soon as they exist, then
# the 384 candidates the growing rule asks for (three one-thread processes at once) and
# the tiny teachers of the ablation after them; at CUTOFF (UTC HH:MM) whatever has not
# finished is stopped, an arm whose 384 candidate lacks a seed is chosen among the
# finished lengths (reported not bracketed), and the measurement runs once.
# Arguments: PID_A PID_B (the two grid jobs already running) and CUTOFF.
source /work/gfull_runs/common.sh
cd /work/gfull
pa=$1; pb=$2; CUTOFF=$3
have() { for s in 0 1 2; do [ -f $G/$1/seed$s/$2 ] || return 1; done; }
grid() { for L in 96 160 256; do have L$L/labels1 student.pt && have L$L/labels1 baseline.pt || return 1; done; }
past_cutoff() { [ "$(date -u +%H%M)" \> "${CUTOFF/:/}" ] || [ "$(date -u +%H%M)" = "${CUTOFF/:/}" ]; }
[ -f $R/choose/measure.json ] && { echo "already measured"; exit 0; }
log "reordered (measure2.sh): grid first, look, 384 candidates, tiny teachers; cutoff $CUTOFF UTC"
( while kill -0 $pa 2>/dev/null; do sleep 20; done; NOWAIT=1 $R/run.sh b:96:0 b:96:1 b:160:0 ) &
( while kill -0 $pb 2>/dev/null; do sleep 20; done; NOWAIT=1 $R/run.sh b:160:1 b:160:2 b:96:2 ) &
wait
grid || { log "grid incomplete after its lanes: stop"; exit 1; }
VAL="--arms distilled,baseline --label-fraction 1.0 --seeds 3 --val-seeds 180-199 --val-scans 4 --val-stride 10 --no-progress"
CANDS="--candidate L96=$G/L96 --candidate L160=$G/L160 --candidate L256=$G/L256"
log "validation look"
$PY -m xmodelkd_ros.evaluation.choose $VAL $CANDS --out $R/look > $R/look.log 2>&1 || { log "look failed"; exit 1; }
edge=$($PY -c "import json; c=json.load(open('$R/look/choice.json'))['choice']; print(' '.join(a for a in ('distilled','baseline') if c[a]=='L256'))")
log "chosen at the grid's edge (256): ${edge:-none}"
lanes=()
for s in 0 1 2; do
  jobs=""
  for arm in $edge; do [ $arm = baseline ] && jobs="$jobs b:384:$s"; done
  # a student's 384 lineage (344 distill epochs, ~90 min of one core per seed) cannot
  # finish before the cutoff beside the baselines': started only when it is the sole edge
  for arm in $edge; do [ $arm = distilled ] && [ "$edge" = distilled ] && jobs="$jobs s:384:$s"; done
  ( NOWAIT=1 $R/run.sh $jobs tt:$s ) & lanes+=($!)
done
until past_cutoff; do
  alive=0; for p in "${lanes[@]}"; do kill -0 $p 2>/dev/null && alive=1; done
  [ $alive = 0 ] && break; sleep 30
done
# stop what has not finished: the lanes' run.sh first (no next job starts), then their trainings
pkill -f "run.sh .*tt:[0-2]" 2>/dev/null; sleep 2
pkill -f "training.train --recipe synthetic --stage (baseline|distill|teacher) --out $G/(L384|teachers_tt)" 2>/dev/null
sleep 5
arms=""
for arm in $edge; do
  [ $arm = distilled ] && n=student.pt || n=baseline.pt
  if have L384/labels1 $n; then arms="$arms,$arm"; else log "cutoff: $arm's 384 candidate incomplete: chosen among 96-256, not bracketed"; fi
done
[ -n "$arms" ] && CANDS="$CANDS --candidate L384:${arms#,}=$G/L384"
if have teachers_tt teacher.pt && [ ! -f $R/teachers/compare.json ]; then
  log "teacher ablation (validation 180-199)"
  $PY -m xmodelkd_ros.evaluation.compare --split val --streets 180-199 --scans 4 --stride 10 --seeds 0-2 \
    --teacher pretrained=$G/teachers_tp/seed{seed}/teacher.pt --teacher tiny=$G/teachers_tt/seed{seed}/teacher.pt \
    --pair pretrained:tiny --out $R/teachers --no-progress > $R/teachers.log 2>&1
  log "teacher ablation rc=$?"
else
  log "tiny teachers: $(ls $G/teachers_tt/seed*/teacher.pt 2>/dev/null | wc -l) of 3 finished"
fi
log "choosing and measuring (9128-9143)"
$PY -m xmodelkd_ros.evaluation.choose $VAL $CANDS --measure --measure-all --test-seeds 9128-9143 \
  --test-scans 4 --test-stride 10 --out $R/choose 2>&1 | tee $R/choose.log
log "choose rc=${PIPESTATUS[0]}"
