#!/usr/bin/env python3
"""Train a segmentation network: python train.py --cfg config/X.yaml --gpus 0-7 [KEY VALUE ...]"""

import sys

from mit_semseg.training.cli import main

if __name__ == "__main__":
    sys.exit(main())
