#!/bin/bash
# waits until pool_dlm_10's choose has finished (its scoring then has the 2 cores to
# itself before its session's cutoff), then runs run.sh with the same args
until grep -q "choose rc=" /work/gdlm_runs/jobs.log 2>/dev/null; do sleep 60; done
cd /work/gt192_runs && exec ./run.sh "$@"
