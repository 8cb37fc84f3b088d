#!/usr/bin/env bash
# The README's main job: installs what it needs (into .venv), then runs the translation
# quickstart (MSP on a small multilingual GPT, English->German from the gettext catalogs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
exec .venv/bin/python -m fairseq_plm.recipes.quickstart "$@"
