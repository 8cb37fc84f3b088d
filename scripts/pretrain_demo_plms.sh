#!/usr/bin/env bash
# Starts (or resumes) the pre-training of the two demo PLMs in the background, one CPU thread
# each, logging to examples/plms/<name>/pretrain.log. Rerun it after an interruption: each job
# continues from its checkpoint.pt. The shipped weights were made by these commands with these
# budgets (started with larger ones, then shortened: the learning-rate schedule, constant then
# decaying over the last 20%, depends only on the final budget; each README lists every start).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
start() {  # name module extra-args...
  local name=$1 module=$2; shift 2
  mkdir -p examples/plms/$name
  if pgrep -f "recipes.$module --out examples/plms/$name" >/dev/null; then echo "$name: already running"; return; fi
  OMP_NUM_THREADS=1 setsid nohup .venv/bin/python -m fairseq_plm.recipes.$module --out examples/plms/$name \
    --threads 1 --fp16-weights "$@" >> examples/plms/$name/pretrain.log 2>&1 < /dev/null &
  echo "$name: started (log examples/plms/$name/pretrain.log)"
}
start tiny-mgpt pretrain_tiny_gpt --minutes ${GPT_MINUTES:-125}
start tiny-xlmr pretrain_tiny_xlmr --minutes ${XLMR_MINUTES:-120} --lr 7e-4
