#!/usr/bin/env bash
# Segment an ADE20K validation image with the released ResNet50-dilated + PPM (deep supervision) model,
# as the original project's demo does. Results go to ./demo_test_output/.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
MODEL=ade20k-resnet50dilated-ppm_deepsup
IMAGE_URL=${ADE20K_IMAGE_URL:-http://sceneparsing.csail.mit.edu/data/ADEChallengeData2016/images/validation/ADE_val_00001519.jpg}
OUT=demo_test_output
IMAGE=$OUT/ADE_val_00001519.jpg
mkdir -p "$OUT"
if ! "$PYTHON" -m mit_semseg.hub "$IMAGE_URL" "$IMAGE"; then
    echo "demo_test.sh: could not download the test image (are you offline?)" >&2
    exit 1
fi
exec "$PYTHON" test.py --model "$MODEL" --imgs "$IMAGE" --gpu "${GPU:-0}" TEST.result "$OUT/"
