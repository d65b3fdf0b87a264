#!/usr/bin/env bash
# What a lent GPU machine runs (no internet, a few minutes): the 350M preset streamed through Ray Data
# into Ray Train with capture on (bench/gpu_check.py: tokens/s, peak memory, capture overhead), then the
# tests that only run where a GPU or vLLM is. `--device cpu`: the same path at reduced width; the
# suite runs it (tests/test_gpu_check.py), so the script cannot rot.
#   scripts/gpu_check.sh                 # cuda
#   scripts/gpu_check.sh --device cpu
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python
"$PY" bench/gpu_check.py "$@"
if [[ " $* " != *" --device cpu "* ]]; then
  "$PY" -m pytest -q -rs tests/test_engines.py   # the vLLM engine tests, where the extra is installed
fi
