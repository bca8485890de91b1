"""Reproducible speed comparisons against peers (python -m benchmarks.run)."""
