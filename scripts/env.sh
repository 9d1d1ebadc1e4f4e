# Shared paths for the scripts; sourced, not run.
export DMS_CACHE="${DMS_CACHE:-$HOME/.cache/dms}"
_req_hash=$(sha256sum "$(dirname "${BASH_SOURCE[0]}")/../requirements.txt" | cut -c1-12)
export DMS_VENV="${DMS_VENV:-$DMS_CACHE/venv-$_req_hash}"
export DMS_BUILD="${DMS_BUILD:-build}"
export DMS_DEFAULT_MODEL="$DMS_CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf"
