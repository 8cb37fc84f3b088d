#!/usr/bin/env bash
# Fills .whl/ (or $1) with what benchmarks/gpu_check.sh needs on this workplace's GPU image
# (Python 3.12, CUDA torch, transformers, sentencepiece, sacrebleu, safetensors already there;
# no registry): fairseq-fixed (source: compiled there), hydra-core, omegaconf, antlr4 (source),
# bitarray and numpy 1.26 (fairseq needs numpy < 2). Run it where PyPI is reachable; then carry
# .whl to the GPU machine with the repository.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEST=${1:-$REPO/.whl}
PY=${PYTHON:-}
if [[ -z $PY ]]; then if [[ -x $REPO/.venv/bin/python ]]; then PY=$REPO/.venv/bin/python; else PY=python3; fi; fi
mkdir -p "$DEST"
PLAT=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLAT[@]}" \
    -d "$DEST" numpy==1.26.4 bitarray==3.12.3 hydra-core==1.3.2 omegaconf==2.3.0
# source distributions (built there); --no-build-isolation keeps pip from fetching torch to read metadata
"$PY" -m pip download -q --no-deps --no-build-isolation --no-binary=:all: -d "$DEST" \
    fairseq-fixed==0.12.3.1 antlr4-python3-runtime==4.9.3
ls -la "$DEST"
