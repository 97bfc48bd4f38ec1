"""Import TextAttack without a network.

TextAttack 0.3.11 does two things at import time that need the internet:

* ``textattack.augmentation.recipes`` builds a ``StopwordModification``, which reads NLTK's
  ``corpora/stopwords/english``; NLTK looks it up on disk and raises ``LookupError`` when it is
  not there. This package ships that file (the 179-word NLTK list) under ``nltk_data/`` and
  appends the folder to ``nltk.data.path``, after the user's own NLTK folders, so real NLTK
  data wins when it exists.
* ``textattack.shared.utils.install`` runs a one-off "post-install" that calls
  ``nltk.download`` for six corpora unless ``<TA_CACHE_DIR>/post_install_check_3`` exists.
  Offline each download fails (or waits for a timeout). The only corpus this project's
  attack uses is the stopword list above, so we write the marker file first. The attack
  never needs the other corpora (POS tagger, WordNet, punkt): none of its components use them.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

from ..errors import MissingExtraError

#: The TextAttack release this project's attack is built and tested against.
TEXTATTACK_VERSION = "0.3.11"
NLTK_DATA = Path(__file__).parent / "nltk_data"
_POST_INSTALL_MARKER = "post_install_check_3"


def textattack_cache_dir() -> Path:
    """TextAttack's cache folder, as it computes it (``$TA_CACHE_DIR`` or ``~/.cache/textattack``)."""
    return Path(os.environ.get("TA_CACHE_DIR") or Path("~/.cache/textattack").expanduser())


def prepare_offline() -> None:
    """Make ``import textattack`` find its NLTK data and skip its download step."""
    import nltk

    if str(NLTK_DATA) not in nltk.data.path:
        nltk.data.path.append(str(NLTK_DATA))
    marker = textattack_cache_dir() / _POST_INSTALL_MARKER
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()


def import_textattack() -> ModuleType:
    """``textattack``, imported offline; :class:`MissingExtraError` naming the extra when it is absent."""
    try:
        importlib.import_module("nltk")
        prepare_offline()
        textattack = importlib.import_module("textattack")
    except ImportError as exc:
        if exc.name not in {"textattack", "nltk"}:
            raise
        raise MissingExtraError(
            f"The adversarial-vulnerability check needs TextAttack, which is not installed ({exc}). "
            f"Install the extra: pip install 'pytest-miniature[attack]' (TextAttack {TEXTATTACK_VERSION})"
        ) from exc
    version = getattr(textattack, "__version__", None) or _installed_version()
    if version != TEXTATTACK_VERSION:
        import warnings

        warnings.warn(
            f"pytest-miniature's attack is built for TextAttack {TEXTATTACK_VERSION} but {version} is installed; "
            f"its defaults (e.g. BERT-Attack's candidate count) have changed between releases",
            stacklevel=2,
        )
    return textattack


def _installed_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("textattack")
    except PackageNotFoundError:
        return None
