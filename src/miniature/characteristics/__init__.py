"""The paper's model characteristics, as pure functions over outputs and id sets."""

from .distribution import OodAgreement, OodDetection, auroc, compare_ood, detect_ood, fpr_at_tpr, tpr_threshold
from .neighbours import kth_neighbour_distances, l2_normalise, nearest_others
from .prediction_errors import ErrorJaccard, compare_errors, error_set, jaccard, negative_flip_rate
from .representation import KnnAgreement, compare_neighbourhoods, neighbour_jaccard

__all__ = [
    "ErrorJaccard", "KnnAgreement", "OodAgreement", "OodDetection", "auroc", "compare_errors", "compare_neighbourhoods",
    "compare_ood", "detect_ood", "error_set", "fpr_at_tpr", "jaccard", "kth_neighbour_distances", "l2_normalise",
    "nearest_others", "negative_flip_rate", "neighbour_jaccard", "tpr_threshold",
]
