"""The paper's model characteristics, as pure functions over outputs and id sets."""

from .prediction_errors import ErrorJaccard, compare_errors, error_set, jaccard, negative_flip_rate

__all__ = ["ErrorJaccard", "compare_errors", "error_set", "jaccard", "negative_flip_rate"]
