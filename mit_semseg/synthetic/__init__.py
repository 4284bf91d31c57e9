"""Synthetic data sets in the real layouts, for the demo and the tests: scenes (`scenes`, ADE20K's layout) and
Unified Perceptual Parsing's multi-task set with textures (`upp`)."""
