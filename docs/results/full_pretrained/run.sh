#!/bin/bash
# one worker of the full_pretrained runs (waits until teacher_len_pool's training is over
# unless NOWAIT=1). Each arg: tp:SEED (pretrained teacher), tt:SEED (tiny teacher),
# b:L:SEED (baseline of L epochs), s:L:SEED (student of lineage L from the pretrained
# teacher; waits for it). Finished jobs are skipped, cut ones resume from last.pt.
source /work/gfull_runs/common.sh
cd /work/gfull
[ "$NOWAIT" = 1 ] || until tl_done; do sleep 60; done
for job in "$@"; do
  IFS=: read kind a b <<< "$job"
  case $kind in
    tp|tt) seed=$a; out=$G/teachers_$kind/seed$seed; st=teacher; net=teacher.pt
           sets="schedule.teacher_epochs=40"; [ $kind = tp ] && sets="$sets $IMG";;
    b|s) L=$a; seed=$b; out=$G/L$L/labels1/seed$seed
         sets="$IMG schedule.student_epochs=$((L-40)) schedule.control_epochs=lineage loss.distill.teacher_decay=linear"
         if [ $kind = b ]; then st=baseline; net=baseline.pt; else st=distill; net=student.pt; fi;;
  esac
  mkdir -p $out
  if [ -f $out/$net ]; then log "skip $job (done)"; continue; fi
  if [ $kind = s ]; then
    until [ -f $G/teachers_tp/seed$seed/teacher.pt ]; do sleep 60; done
    [ -f $out/teacher.pt ] || cp $G/teachers_tp/seed$seed/teacher.pt $out/teacher.pt
  fi
  res=""; [ -f $out/$st/last.pt ] && res="--resume"
  log "start $job $res"
  $PY -m xmodelkd_ros.training.train --recipe synthetic --stage $st --out $out --seed $seed \
     --threads 1 --no-progress $res --set $sets >> $R/${kind}_${a}${b:+_$b}.log 2>&1
  log "end $job rc=$?"
done
