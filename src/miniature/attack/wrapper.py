"""A TextAttack model wrapper around any miniature backend (HF or ONNX), with dynamic padding."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..models import Backend
from .offline import import_textattack

textattack = import_textattack()


class BackendModelWrapper(textattack.models.wrappers.ModelWrapper):
    """Answers TextAttack's queries with the backend's logits.

    TextAttack's stock ``HuggingFaceModelWrapper`` pads every query to the model's maximum
    length (512 tokens for BERT) and runs only PyTorch models. This wrapper goes through
    :meth:`Backend.run`: each batch is sorted by length and padded to its longest member, so a
    200-token review costs 200 tokens, and ONNX candidates are attackable as well.
    """

    def __init__(self, backend: Backend, *, batch_size: int, max_length: int) -> None:
        self.backend = backend
        # TextAttack reads ``.model`` to check the model suits the goal function.
        self.model = backend
        self.batch_size = batch_size
        self.max_length = max_length
        #: Texts this wrapper has scored (TextAttack's own count excludes its cache hits too).
        self.queries = 0

    def __call__(self, text_input_list: Sequence[str]) -> np.ndarray:
        texts = list(text_input_list)  # single-text classification: each input is one string
        outputs = self.backend.run(texts, batch_size=self.batch_size, max_length=self.max_length, need_hidden=False)
        if outputs.logits is None:
            raise ValueError(f"Model {self.backend.spec.name!r} returned no logits; only classifiers can be attacked")
        self.queries += len(texts)
        return outputs.logits
