"""Experiments beyond the training pipeline; each runs as `python -m experiments.<name>`."""
