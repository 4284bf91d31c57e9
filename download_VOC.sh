#!/usr/bin/env bash
# Download Pascal VOC 2012 and the SBD augmentation into ./data/voc/raw (resumable, MD5-checked; archives
# already unpacked are skipped). Then: python -m mit_semseg.prepare.voc prepare data/voc/raw data/voc
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
exec "$PYTHON" -m mit_semseg.prepare.voc download data/voc/raw "$@"
