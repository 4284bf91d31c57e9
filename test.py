#!/usr/bin/env python3
"""Segment images: python test.py --imgs PATH --cfg config/X.yaml [--gpu 0|cpu] [KEY VALUE ...]"""

import sys

from mit_semseg.predict import main

if __name__ == "__main__":
    sys.exit(main())
