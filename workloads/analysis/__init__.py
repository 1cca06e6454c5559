"""Analyses of models and runs: parameter and multiply-add counts."""

from workloads.analysis.complexity import count_multiply_adds, count_parameters

__all__ = ["count_multiply_adds", "count_parameters"]
