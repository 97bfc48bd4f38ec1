"""Exceptions and warnings. Every error names the bad input and says what was expected."""


class MiniatureError(Exception):
    """Root of every error raised by pytest-miniature."""


class UsageError(MiniatureError, ValueError):
    """A spec, option or config value is malformed or points at nothing.

    The pytest plugin turns these into pytest usage errors before any test runs.
    """


class ModelLoadError(MiniatureError):
    """A model spec was well formed but the model could not be loaded or run."""


class DatasetError(MiniatureError):
    """A dataset could not be loaded, or lacks what a check needs."""


class LabelMismatchError(DatasetError):
    """The dataset's labels cannot be matched to a model's ``id2label``."""


class MissingExtraError(MiniatureError, ImportError):
    """An optional dependency is not installed; the message names the extra."""


class CacheWarning(UserWarning):
    """A cache entry was unreadable; it was moved aside and recomputed."""
