#!/usr/bin/env bash
# Create .venv and install the pinned stack. Idempotent: a second run with
# everything present only checks versions and returns in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
TORCH=2.14.1
TORCHVISION=0.29.1
FACENET=2.6.0
AV=18.1.0  # PyAV: video decoding and encoding for muldml predict VIDEO

[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python

pip_quiet() {  # pip, minus the notes about this machine's local index folders
    "$VPY" -m pip install -q "$@" 2> >(grep -v -e "^WARNING: Location" -e "dependency resolver" -e "facenet-pytorch 2.6.0 requires" >&2)
}

have() {  # have PACKAGE VERSION: true when that exact version is installed
    [ "$("$VPY" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null)" = "$2" ]
}

if ! have torch "$TORCH" || ! have torchvision "$TORCHVISION"; then
    echo "setup: installing torch $TORCH + torchvision $TORCHVISION"
    pip_quiet "torch==$TORCH" "torchvision==$TORCHVISION"
fi
if ! have facenet-pytorch "$FACENET"; then
    # Its metadata pins torch<2.3, yet it runs on this stack: install without deps.
    echo "setup: installing facenet-pytorch $FACENET (--no-deps)"
    pip_quiet --no-deps "facenet-pytorch==$FACENET"
fi
if ! have av "$AV"; then
    echo "setup: installing av $AV"
    pip_quiet "av==$AV"
fi
stamp=.venv/.muldml-setup
if [ ! -f "$stamp" ] || [ setup.py -nt "$stamp" ] || ! "$VPY" -c "import muldml" 2>/dev/null; then
    echo "setup: installing muldml (editable, with dev extras)"
    pip_quiet -e ".[dev]"
    touch "$stamp"
fi
echo "setup: .venv ready ($("$VPY" -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)'))"
