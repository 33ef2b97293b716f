"""Data preparation, training and evaluation scripts (run as ``python -m train.<script>``)."""
