"""Evaluation: metrics, prediction with TTA, plots and the run report."""
