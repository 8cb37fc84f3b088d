#!/usr/bin/env bash
# Creates/updates the virtual environment .venv in the repo root. Idempotent: a stamp records
# what was installed, and nothing is reinstalled while the requirement files are unchanged.
#   scripts/setup.sh          runtime dependencies + fairseq-fixed + this package (editable)
#   scripts/setup.sh --test   also the test dependencies and the generation metrics
#                             (requirements-eval.txt: ROUGE-L, METEOR with offline WordNet)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
want_test=0; [[ "${1:-}" == "--test" ]] && want_test=1

stamp_of() { cat requirements.txt pyproject.toml; [[ $1 == 1 ]] && cat requirements-test.txt requirements-eval.txt; echo "fairseq-fixed==0.12.3.1 fastBPE==0.1.0"; }
STAMP=.venv/.fairseq_plm_setup
want=$(stamp_of $want_test | sha256sum | cut -d' ' -f1)
if [[ -f $STAMP ]] && grep -qx "$want" $STAMP; then exit 0; fi

echo "[setup] installing into .venv (first run takes a few minutes: fairseq-fixed compiles)" >&2
[[ -x .venv/bin/python ]] || $PY -m venv .venv
PIP=(.venv/bin/python -m pip install --disable-pip-version-check -qq)  # -qq: errors only (machines whose pip config lists absent local indexes warn per package)
"${PIP[@]}" -r requirements.txt
# both compile against the installed cython/numpy/torch, hence no build isolation;
# fairseq-fixed without deps: its torchaudio requirement would pull CUDA builds of torch.
.venv/bin/python -c "import fastBPE" 2>/dev/null || "${PIP[@]}" --no-build-isolation fastBPE==0.1.0
.venv/bin/python -c "import fairseq, sys; sys.exit(fairseq.__version__ != '0.12.3.1')" 2>/dev/null \
  || "${PIP[@]}" --no-build-isolation --no-deps fairseq-fixed==0.12.3.1
"${PIP[@]}" --no-build-isolation --no-deps -e .
[[ $want_test == 1 ]] && "${PIP[@]}" -r requirements-test.txt -r requirements-eval.txt
.venv/bin/python -c "import fairseq_plm, fairseq, torch; print('[setup] fairseq', fairseq.__version__, 'torch', torch.__version__)" 2>&1 | grep '^\[setup\]' >&2
echo "$want" >> $STAMP  # one line per installed set (runtime, runtime+test)
