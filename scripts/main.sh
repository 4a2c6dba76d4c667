#!/usr/bin/env bash
# The README's main job: set up the environment, then train, evaluate and recommend on ml-100k.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$ROOT/scripts/setup_env.sh"
set -euo pipefail
cd "$ROOT"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python examples/quickstart.py "$@"
