#!/usr/bin/env bash
# Get ready for benchmarks/gpu_check.sh and gpu_guided_check.sh on a GPU machine that has
# torch but no package index. On a machine with one, from the repository root:
#
#   bash benchmarks/gpu_wheels.sh download     # x86-64, CPython 3.12 wheels into .whl/
#
# then carry .whl/ to the GPU machine (keep it out of git: .git/info/exclude) and there:
#
#   bash benchmarks/gpu_wheels.sh install && export PYTHONPATH=/tmp/site
#   PYTHON=python3 bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  download)
    mapfile -t wanted < <(grep -v '^#' benchmarks/gpu_wheels.txt)
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d .whl "${wanted[@]}" ;;
  install)
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site python3 -m pip install -q --no-deps --no-build-isolation \
      --no-index -e . ;;
  *)
    echo "usage: bash benchmarks/gpu_wheels.sh download|install" >&2; exit 2 ;;
esac
