"""Multiple choice, the causal LM's error-set path: each row's choices scored as continuations of its text.

As lm-evaluation-harness's ``loglikelihood``: a choice's tokens are those of text + choice past the tokens
of the text alone; its score is the sum of their log-probabilities. A pair longer than the model's window
keeps its last ``window + 1`` tokens, of which the model reads all but the last
(``(context + continuation)[-(max_length + 1):][:-1]``), so the context loses tokens from its left only.
A model picks the choice of highest score; it is right when that is the gold choice.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data import EvalSet
from ..errors import DatasetError, MissingGold, MissingOutput, ModelLoadError
from ..evidence import Decisions, Model
from ..models.base import Backend
from .base import Source, architectures
from .token_windows import Segment, chunks, log_probabilities, picked, predicted_rows, stream, windows_per_batch


def choice_scores(backend: Backend, eval_set: EvalSet, settings: Any, window: int) -> np.ndarray:
    """Each row's choices scored as continuations of its text: the summed log-probability of the choice's tokens.

    Shape (rows, most choices), -inf past a row's choices.
    """
    name = backend.spec.name
    contexts = backend.tokenizer(list(eval_set.texts))["input_ids"]
    pairs = [(i, c) for i, options in enumerate(eval_set.choices) for c in range(len(options))]
    whole = backend.tokenizer([eval_set.texts[i] + eval_set.choices[i][c] for i, c in pairs])["input_ids"]
    ids, pieces = [], []
    for k, ((i, c), tokens) in enumerate(zip(pairs, whole)):
        continuation = len(tokens) - len(contexts[i])
        if list(tokens[: len(contexts[i]) - 1]) != list(contexts[i][:-1]) or (
                len(contexts[i]) and contexts[i][-1] == getattr(backend.tokenizer, "eos_token_id", None)):
            raise DatasetError(
                f"Dataset {eval_set.name!r}, row {eval_set.ids[i]!r}: under model {name!r}'s tokenizer the text alone "
                f"is not a prefix of the text with choice {c} ({eval_set.choices[i][c]!r}) (a tokenizer that appends an "
                f"end-of-text token, or merges across the boundary), so the choice's own tokens cannot be told apart; "
                f"give the model's tokenizer without add_eos_token, or start each choice with a space")
        if continuation < 1 or continuation > window:
            said = "no tokens of its own" if continuation < 1 else f"{continuation} tokens, more than a {window}-token window allows"
            raise DatasetError(f"Dataset {eval_set.name!r}: choice {c} ({eval_set.choices[i][c]!r}) of row "
                               f"{eval_set.ids[i]!r} has {said} after its text under model {name!r}'s tokenizer")
        kept = list(tokens)[-(window + 1):]  # lm-eval's window + 1: the last token is only ever a target
        ids.append(kept)
        pieces.append(Segment(k, 0, len(kept) - 1, len(kept) - continuation, len(kept)))
    scores = np.full((len(eval_set), max(map(len, eval_set.choices))), -np.inf)
    per_batch = windows_per_batch([backend], window, settings.logits_memory)
    for piece, (logits,), _ in stream([backend], ids, pieces, batch_size=per_batch, need_hidden=False, model_names=[name]):
        rows, targets = predicted_rows(piece, logits), np.asarray(ids[piece.text][piece.first:piece.stop])
        total = 0.0
        for part in chunks(len(rows), logits.shape[-1]):
            log_p = log_probabilities(rows[part], name, eval_set, pairs[piece.text][0])
            total += float(picked(log_p, targets[part]).sum())
        scores[pairs[piece.text]] = total
    return scores


def decisions(task_name: str, source: Source, model: Model, eval_set: EvalSet, *, check: str, gold: bool) -> Decisions:
    """Each row's picked choice; right when it is the gold one. The gold choice's probability is the softmax of
    the row's choice scores at the gold one (it ranks the rows that changed most)."""
    if not eval_set.is_multiple_choice:
        raise MissingGold(
            f"Dataset {eval_set.name!r} has no choices, which {check} needs on a causal LM (a causal LM picks among "
            f"choices: give columns context, choices (a JSON list or |-separated) and label (the gold choice's index))")
    if gold:
        eval_set.require_labels(check)
    outputs = source.outputs(model, eval_set)
    if outputs.token_counts is None:
        raise MissingOutput(
            f"Model {model.name!r} was not read as a causal language model (architectures: "
            f"{architectures(source, model)}), which {check} needs; set task = \"causal-lm\"")
    scores = outputs.choice_scores
    if scores is None:
        raise ModelLoadError(f"Model {model.name!r} has no choice scores on {eval_set.name!r}")
    picked = scores.argmax(axis=1)
    predicted = tuple(eval_set.choices[i][c] for i, c in enumerate(picked))
    if eval_set.labels is None:
        return Decisions(task_name, predicted, None)
    labels = np.asarray(eval_set.labels, dtype=np.int64)
    shifted = scores - scores.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    return Decisions(task_name, predicted, picked == labels, gold=tuple(eval_set.choices[i][g] for i, g in enumerate(labels)),
                     gold_probability=probabilities[np.arange(len(labels)), labels])
