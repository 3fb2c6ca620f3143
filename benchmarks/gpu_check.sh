#!/usr/bin/env bash
# The cardiac GPU check (issue 17 §4), one call on a GPU machine, about 8 minutes; writes
# benchmarks/results/gpu_check.{md,json} (and $OUT/ copies when $OUT is set, as on the device machine).
#
# The GPU machine runs its own python3 with PyTorch and nothing fetched; the packages ShapeTune needs that it lacks
# travel as wheels. Prepare them once here (this machine reaches the package registries):
#   python3 -m pip download -d .wheels --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#       -c constraints.txt pydantic pydantic-core annotated-types typing-inspection nibabel
#   echo /.wheels/ >> .git/info/exclude
# and carry `.wheels`. Locally (`.venv` present) it runs with the project's own environment.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PY:-}" ] && [ -x .venv/bin/python ]; then
  PY=.venv/bin/python   # this project's environment (not carried to the GPU machine: too large)
else
  PY=${PY:-python3}
  if [ -d .wheels ]; then
    "$PY" -m pip install -q --no-index --find-links .wheels --no-deps .wheels/*.whl
  fi
fi
export PYTHONPATH="$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
"$PY" benchmarks/gpu_check.py --budget-min "${BUDGET_MIN:-8}" "$@"
if [ -n "${OUT:-}" ]; then cp benchmarks/results/gpu_check*.md benchmarks/results/gpu_check*.json "$OUT"/ 2>/dev/null || true; fi
