#!/usr/bin/env bash
# Download ADE20K into ./data (resumable), unzip it, and write data/training.odgt and data/validation.odgt.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
exec "$PYTHON" -m mit_semseg.prepare.ade20k --data data "$@"
