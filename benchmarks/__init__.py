"""Benchmarks: what a run, a sweep and `mlflow ui` cost, against hand-written floors (`python -m benchmarks.bench`)."""
