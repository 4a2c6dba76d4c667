#!/usr/bin/env bash
# The README's test command: set up the environment, then run the whole suite (CPU, offline).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$ROOT/scripts/setup_env.sh"
set -euo pipefail
cd "$ROOT"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# tiny test models are overhead-bound: one thread each is as fast, and far faster when the cores are shared
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
python -m pytest -q tests "$@"
