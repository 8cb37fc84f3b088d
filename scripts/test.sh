#!/usr/bin/env bash
# Installs what the tests need (into .venv) and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
# one single-threaded pytest worker per core (at most 4; PYTEST_WORKERS overrides, 0 = no workers);
# the cores are counted without OMP_NUM_THREADS, which GNU nproc would report instead
CORES=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
WORKERS=${PYTEST_WORKERS:-$(( CORES < 4 ? CORES : 4 ))}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# a test module's tests on one worker (its module fixtures built once); session fixtures are
# built once per run and shared by the workers (tests/conftest.py: built_once)
DIST=()
[ "$WORKERS" -gt 0 ] && DIST=(--dist loadscope)
exec .venv/bin/python -m pytest -q -n "$WORKERS" "${DIST[@]}" tests "$@"
