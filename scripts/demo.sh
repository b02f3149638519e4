#!/usr/bin/env bash
# Set up .venv (idempotent), then run the built-in demo: generated faces, cnn vs mul-dml.
# Extra arguments go to `muldml demo` (e.g. --out DIR, --epochs N).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/muldml demo "$@"
