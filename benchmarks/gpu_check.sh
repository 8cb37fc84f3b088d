#!/usr/bin/env bash
# One call on a GPU machine that has this repository: every method's tiny end-to-end train +
# generate with --fp16 and --amp, then the speed benchmarks at true shapes; figures to OUTDIR
# (summary.md, results.json, logs.tar.gz). Under 10 minutes on one H200 (benchmarks that would
# overrun --budget-minutes are skipped and say so).
#
#   bash benchmarks/gpu_check.sh OUTDIR                 # GPU
#   bash benchmarks/gpu_check.sh OUTDIR --device cpu    # dry run: fp32, tiny shapes (~1 min)
#   (other options: see python benchmarks/gpu_check.py --help)
#
# Python: $PYTHON, else .venv/bin/python (scripts/setup.sh), else python3 (on the GPU image:
# the one with CUDA torch). What it needs besides torch (fairseq-fixed 0.12.3.1, hydra-core,
# omegaconf, bitarray, sentencepiece, sacrebleu, safetensors; transformers for the backbone
# benchmark; numpy < 2 for fairseq) is checked first. A machine without a registry gets the
# missing ones from the wheel directory $WHEELS (default .whl/ in the repo), which
# `bash benchmarks/gpu_wheels.sh` fills on a machine with PyPI access (Python 3.12,
# manylinux x86_64, ~29 MB); they are installed into $GPU_CHECK_SITE (default .gpu_site/,
# reused by later runs), fairseq-fixed compiled there from its source (~1-2 min).
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ $# -lt 1 || $1 == -* ]]; then
  echo "usage: bash benchmarks/gpu_check.sh OUTDIR [--device cpu] [--budget-minutes M] [--skip-benchmarks]" >&2
  exit 2
fi
PY=${PYTHON:-}
if [[ -z $PY ]]; then
  if [[ -x $REPO/.venv/bin/python ]]; then PY=$REPO/.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

missing() {  # the modules this check imports that $PY cannot find, and an old-numpy need
  "$PY" - <<'PYEOF'
import importlib.util
mods = ["torch", "fairseq", "hydra", "omegaconf", "bitarray", "sentencepiece", "sacrebleu", "safetensors",
        "transformers", "regex", "tqdm"]
out = [m for m in mods if importlib.util.find_spec(m) is None]
try:
    import numpy
    if int(numpy.__version__.split(".")[0]) >= 2:
        out.append("numpy<2")
except ImportError:
    out.append("numpy<2")
print(" ".join(out))
PYEOF
}

need=$(missing)
if [[ -n $need ]]; then
  WHEELS=${WHEELS:-$REPO/.whl}
  SITE=${GPU_CHECK_SITE:-$REPO/.gpu_site}
  if [[ ! -d $WHEELS ]]; then
    echo "gpu_check: $PY lacks: $need. Put the wheels in $WHEELS (bash benchmarks/gpu_wheels.sh on a machine" \
         "with PyPI access) or set PYTHON to an environment that has them (scripts/setup.sh)." >&2
    exit 2
  fi
  echo "[gpu_check] installing from $WHEELS into $SITE (missing: $need)" >&2
  mkdir -p "$SITE"
  export PYTHONPATH="$SITE:$PYTHONPATH"
  shopt -s nullglob
  whls=("$WHEELS"/*.whl)
  [[ ${#whls[@]} -gt 0 ]] && "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" "${whls[@]}"
  for sdist in "$WHEELS"/*.tar.gz; do
    name=$(basename "$sdist")
    # fairseq-fixed compiles its C++/Cython extensions against the numpy/torch found here;
    # without CUDA_HOME it skips its optional CUDA kernels (not used by this package)
    env -u CUDA_HOME "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir \
        --target "$SITE" "$sdist" || { echo "gpu_check: building $name failed" >&2; exit 2; }
  done
  need=$(missing)
  if [[ -n $need ]]; then
    echo "gpu_check: still missing after installing $WHEELS: $need" >&2
    exit 2
  fi
fi
exec "$PY" "$REPO/benchmarks/gpu_check.py" "$@"
