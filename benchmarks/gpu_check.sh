#!/usr/bin/env bash
# The cardiac GPU check (issue 17 §4), one call on a GPU machine (5.9 min on an H200, 2026-12-04); writes
# benchmarks/results/gpu_check.{md,json} after each part (and copies, with the whole log, to $OUT when it is set,
# as on the device machine).
#
# The GPU machine runs its own python3 with PyTorch; the packages ShapeTune needs that its image lacks travel as
# wheels (checked: the script's imports against the image's package list). Prepare them once here:
#   python3 -m pip download -d .whl --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 \
#       typing-inspection==0.4.5 typing_extensions==4.16.0 nibabel==5.4.2 meshio==5.3.5
#   echo /.whl/ >> .git/info/exclude
# and carry `.whl`. Locally (`.venv` present) it runs with the project's own environment.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PY:-}" ]; then
  :                     # the caller's interpreter, with its own packages (the tests run it so)
elif [ -x .venv/bin/python ]; then
  PY=.venv/bin/python   # this project's environment (not carried to the GPU machine: too large)
else
  PY=python3            # the GPU machine's, with the carried wheels
  if [ -d .whl ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
  fi
fi
export PYTHONPATH="$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
"$PY" benchmarks/gpu_check.py --budget-min "${BUDGET_MIN:-8}" "$@" 2>&1 | tee "${OUT:-/tmp}/gpu_check.log"
