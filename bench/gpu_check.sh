#!/usr/bin/env bash
# The prepared GPU check (bench/gpu_check.py): CUDA placement, bf16 and served series/s of
# ChronosForecaster for chronos-bolt-base and Chronos-2, batched and unbatched, as JSON +
# Markdown in bench/results/. Runs on CPU too (reports no GPU, measures the tiny sizes).
# Capped at 8 minutes; options are passed on (--help).
set -euo pipefail
cd "$(dirname "$0")/.."
python=.venv/bin/python
[ -x "$python" ] || python=python3
exec timeout --signal=TERM --kill-after=20 480 "$python" -m bench.gpu_check "$@"
