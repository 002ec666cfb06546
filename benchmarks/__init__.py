"""Benchmarks and results tables; run each as `python -m benchmarks.NAME`
from the repository root (the package `rs_jax` is installed; `configs/` is
read from the root)."""
