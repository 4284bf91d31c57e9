"""Training: optimisation, checkpoints and resume state, progress reporting and the loop."""
