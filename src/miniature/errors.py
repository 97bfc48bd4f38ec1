"""Exceptions and warnings. Every error names the bad input and says what was expected."""


class MiniatureError(Exception):
    """Root of every error raised by pytest-miniature."""

    #: What could not be used, as a report's ``errors`` say it: ``usage``, ``model`` (or the engine) or ``data``.
    kind = "model"


class UsageError(MiniatureError, ValueError):
    """A spec, option or config value is malformed or points at nothing.

    The pytest plugin turns these into pytest usage errors before any test runs.
    """

    kind = "usage"


class ModelLoadError(MiniatureError):
    """A model spec was well formed but the model could not be loaded or run."""


class EngineError(ModelLoadError):
    """The engine cannot run models: a Ray cluster that cannot be reached, joined or started."""


class DatasetError(MiniatureError):
    """A dataset could not be loaded, or lacks what a check needs."""

    kind = "data"


class LabelMismatchError(DatasetError):
    """The dataset's labels cannot be matched to a model's ``id2label``."""


class NotApplicable(MiniatureError):
    """A check cannot apply to this model or data set: an ONNX export with logits only has no hidden
    states for the KNN check, a bare encoder makes no predictions, a data set has no labels.

    Where the check was chosen automatically, it is reported as not applicable with this
    message as the reason and the other checks run; where the user asked for it, it is an error.
    """


class MissingOutput(ModelLoadError, NotApplicable):
    """A model lacks an output a check needs: a classification or QA head, hidden states."""


class MissingGold(DatasetError, NotApplicable):
    """A data set lacks the labels or answers a check needs."""


class NotCached(MiniatureError):
    """An output a cache-only engine (pytest-xdist's controller) does not find in the cache; it never runs a model."""


class MissingExtraError(MiniatureError, ImportError):
    """An optional dependency is not installed; the message names the extra."""


class DataWarning(UserWarning):
    """A data set was read, but maybe not as its author meant (rows merged by a stray quote)."""


class CacheWarning(UserWarning):
    """A cache entry was unreadable; it was moved aside and recomputed."""


class GateFailure(AssertionError):
    """A model pair fell outside a gate's threshold (a failed test, not an error)."""
