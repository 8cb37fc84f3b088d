#!/usr/bin/env bash
# Installs what the tests need (into .venv) and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# one single-threaded pytest worker per core (at most 4; PYTEST_WORKERS overrides, 0 = no workers)
WORKERS=${PYTEST_WORKERS:-$(( $(nproc) < 4 ? $(nproc) : 4 ))}
exec .venv/bin/python -m pytest -q -n "$WORKERS" tests "$@"
