"""SQuAD 2.0 answer scoring, following the official evaluation script (evaluate-v2.0.py).

An answer is normalised by lower-casing, removing punctuation, removing the articles
a/an/the, and collapsing whitespace. Exact match (EM) and token F1 are taken against
every gold answer and the best counts. Gold answers that normalise to nothing are dropped;
a question with none left is unanswerable, and only the empty prediction matches it.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation, drop articles, collapse whitespace (the script's order)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _golds(gold_answers: Sequence[str]) -> list[str]:
    answers = [a for a in gold_answers if normalize_answer(a)]
    return answers or [""]


def exact_match(prediction: str, gold_answers: Sequence[str]) -> bool:
    """Whether ``prediction`` normalises to one of the gold answers (unanswerable: to nothing)."""
    predicted = normalize_answer(prediction)
    return any(normalize_answer(gold) == predicted for gold in _golds(gold_answers))


def f1_score(prediction: str, gold_answers: Sequence[str]) -> float:
    """The best token-overlap F1 of ``prediction`` against the gold answers."""
    return max(_f1(prediction, gold) for gold in _golds(gold_answers))


def _f1(prediction: str, gold: str) -> float:
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not expected:
        return float(predicted == expected)
    same = sum((Counter(predicted) & Counter(expected)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(expected)
    return 2 * precision * recall / (precision + recall)
