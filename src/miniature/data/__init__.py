"""Evaluation data: specs, loading, label alignment."""

from .evalset import EvalSet
from .labels import align_labels
from .loading import load_eval_set
from .spec import DatasetSpec, parse_dataset_spec

__all__ = ["DatasetSpec", "EvalSet", "align_labels", "load_eval_set", "parse_dataset_spec"]
