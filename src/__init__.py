"""Fit y = w·x² + b by gradient descent, with NumPy or torch, tracked in MLflow."""
