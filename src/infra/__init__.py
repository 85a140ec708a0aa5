"""What keeps runs and the store safe: skippable on a first read of the core path (src/train.py)."""
