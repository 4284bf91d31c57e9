#!/usr/bin/env python3
"""Evaluate a checkpoint on the validation set: python eval_multipro.py --cfg config/X.yaml --gpus 0-7"""

import sys

from mit_semseg.evaluation import main

if __name__ == "__main__":
    sys.exit(main())
