"""Fit a model (the book's: src/models/quadratic.py) by gradient descent, with NumPy or torch, tracked in MLflow.

Importing this package does nothing else: each entry point (`python -m src.train`, `src.stages.*`,
`src.ui`, `src.verify`) starts with `src.infra.startup.begin()`.
"""
