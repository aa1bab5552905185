#!/usr/bin/env bash
# Install recbole-cora with its test extras into .venv (CPU torch pinned) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -c constraints.txt -e ".[test]"
python -m pytest -q tests "$@"
