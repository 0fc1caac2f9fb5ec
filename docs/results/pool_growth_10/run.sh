#!/bin/bash
# one lane of the pool_growth_10 runs (waits for full_pretrained's "choose rc=" and for
# teacher_frozen_10's and teacher_wide_10's networks, unless NOWAIT=1). Each arg
# KIND:EPOCHS:SEED, KIND plain|dlm: a P0 distilled student from the seed's P0 48-epoch
# teacher. Finished jobs are skipped, cut ones resume from last.pt.
source /work/poolruns/common.sh
export PYTHONPATH=/work/gpg
cd /work/gpg
R=/work/gpg_runs
log() { echo "$(date -u +%H:%M:%S) $*" >> $R/jobs.log; }
have6() { for s in 0 1 2; do [ -f /work/t10/$1/seed$s/teacher.pt ] && [ -f /work/t10s/$1/seed$s/student.pt ] || return 1; done; }
[ "$NOWAIT" = 1 ] || until grep -q "choose rc=" /work/gfull_runs/jobs.log 2>/dev/null && have6 frozen && have6 wide; do sleep 60; done
for job in "$@"; do
  IFS=: read kind ep seed <<< "$job"
  if [ $kind = dlm ]; then name=p0_dlm$ep; extra="loss.distill_lasermix=true"; else name=p0_e$ep; extra=""; fi
  out=/work/grid/$name/seed$seed
  mkdir -p $out
  [ -f $out/teacher.pt ] || cp /work/poolruns/p0/seed$seed/teacher.pt $out/teacher.pt
  if [ -f $out/student.pt ]; then log "skip $job (done)"; continue; fi
  res=""; [ -f $out/distill/last.pt ] && res="--resume"
  log "start $job $res"
  $PY -m xmodelkd_ros.training.train --recipe synthetic_scarce --stage distill --out $out --seed $seed \
     --threads 1 --no-progress $res --set $COMMON schedule.student_epochs=$ep $extra \
     >> $R/${name}_s${seed}.log 2>&1
  log "end $job rc=$?"
done
