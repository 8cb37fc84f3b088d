#!/usr/bin/env bash
# Every timed figure of issue 18, before and after, on this machine (CPU), for a quiet machine:
# the "before" rows run the benchmark scripts and package of BASE (the commit before the change,
# extracted with `git archive`, nothing checked out or written in this repository), the "after"
# rows this checkout's. Outputs: OUTDIR/<name>.txt (each benchmark's table, its command on top).
#
#   bash benchmarks/issue18_figures.sh BASE OUTDIR [--only NAME[,NAME...]] [--with-bleu]
#
# BASE: e.g. b2b29c5 (main before the speed branch). Runs one benchmark at a time; about 2 h on a
# quiet 2-core machine (the mGPT / XLM-R base shapes dominate), 25 min more with --with-bleu
# (quickstart BLEU with and without the output shortlist; its training is time-budgeted, so the
# shortlist's extra updates per minute are what it measures).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BASE=${1:?usage: issue18_figures.sh BASE OUTDIR [--only NAMES] [--with-bleu]}
OUT=${2:?usage: issue18_figures.sh BASE OUTDIR [--only NAMES] [--with-bleu]}
shift 2
ONLY="" ; BLEU=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --only) ONLY=",$2,"; shift 2 ;;
    --with-bleu) BLEU=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-$REPO/.venv/bin/python}
[[ -x $PY ]] || PY=python3
mkdir -p "$OUT"
BEFORE=$(mktemp -d /tmp/issue18-base.XXXX)
git -C "$REPO" archive "$BASE" | tar -x -C "$BEFORE"
trap 'rm -rf "$BEFORE"' EXIT

run() {  # name, directory (before|after), command...
  local name=$1 where=$2; shift 2
  [[ -z $ONLY || $ONLY == *",$name,"* ]] || return 0
  local dir=$REPO; [[ $where == before ]] && dir=$BEFORE
  echo "[issue18] $name ($where): $*" >&2
  { echo "# $where ($([[ $where == before ]] && echo "$BASE" || git -C "$REPO" rev-parse --short HEAD)): $*"
    (cd "$dir" && PYTHONPATH=$dir OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$PY" "$@" 2>&1 | grep -v Warning)
  } > "$OUT/$name.txt"
}

# backbone vs transformers (target: ours >= 1.1x HF's speed), and the compiled path
run backbone-before before benchmarks/bench_backbone.py
run backbone-after after benchmarks/bench_backbone.py
run backbone-compiled after benchmarks/bench_backbone.py --compile
# MSP vs single-stage at mGPT's shape (targets: train <= 1.3x, decode <= 1.1x), full vs 30K shortlist
run msp-mgpt-before before benchmarks/bench_msp.py --preset mgpt --batch 2 --src-len 16 --tgt-len 16 --repeats 3
run msp-mgpt-after after benchmarks/bench_msp.py --preset mgpt --batch 2 --src-len 16 --tgt-len 16 --repeats 3 \
    --output-shortlist 30000
run msp-mgpt-short-tgt-before before benchmarks/bench_msp.py --preset mgpt --batch 2 --src-len 20 --tgt-len 10 --repeats 3
run msp-mgpt-short-tgt-after after benchmarks/bench_msp.py --preset mgpt --batch 2 --src-len 20 --tgt-len 10 \
    --repeats 3 --output-shortlist 30000
run msp-small-before before benchmarks/bench_msp.py
run msp-small-after after benchmarks/bench_msp.py --output-shortlist 8000
run msp-small-compiled after benchmarks/bench_msp.py --compile
# SGA vs MSP beam 4 at batch 1 (target >= 5x), XLM-R base shape, full vs 30K shortlist
run sga-xlmr-base-before before benchmarks/bench_sga.py --preset xlmr-base --sentences 2 --repeats 1
run sga-xlmr-base-after after benchmarks/bench_sga.py --preset xlmr-base --sentences 2 --repeats 1 \
    --output-shortlist 30000 --skip-adaptive
run sga-small-before before benchmarks/bench_sga.py
run sga-small-after after benchmarks/bench_sga.py --output-shortlist 8000
# deep fusion vs Transformer-base and the multi-task step
run fusion-before before benchmarks/bench_fusion.py --sentences 4 --repeats 2 --batch 8 --train-repeats 2
run fusion-after after benchmarks/bench_fusion.py --sentences 4 --repeats 2 --batch 8 --train-repeats 2

if [[ $BLEU == 1 ]]; then  # BLEU impact of the shortlist on the gettext quickstart (time-budgeted training)
  for sl in none auto; do
    [[ -z $ONLY || $ONLY == *",bleu-$sl,"* ]] || continue
    (cd "$REPO" && PYTHONPATH=$REPO OMP_NUM_THREADS=2 "$PY" -m fairseq_plm.recipes.quickstart \
        --out "$OUT/quickstart-$sl" --output-shortlist $sl) > "$OUT/bleu-$sl.txt" 2>&1
  done
fi
echo "[issue18] done: $OUT" >&2
