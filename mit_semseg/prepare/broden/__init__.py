"""Broden+, the multi-source dataset of Unified Perceptual Parsing: download the raw sources, prepare them.

python -m mit_semseg.prepare.broden download [--raw data/broden/raw]
python -m mit_semseg.prepare.broden prepare data/broden/raw data/broden
"""
