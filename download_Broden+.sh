#!/usr/bin/env bash
# Download the raw Broden+ sources into ./data/broden/raw (resumable; sources already there are skipped).
# Then: python -m mit_semseg.prepare.broden prepare data/broden/raw data/broden
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
exec "$PYTHON" -m mit_semseg.prepare.broden download --raw data/broden/raw "$@"
