"""Experiments beyond the training pipeline; each runs as `python -m experiments.<name>`."""

import src  # noqa: F401  # imported while sys.argv[0] is "-m": an interrupt during start-up is one line (see src)
