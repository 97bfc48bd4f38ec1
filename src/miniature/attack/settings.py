"""``[tool.miniature.attack]``: the settings of BERT-Attack, the adversarial-vulnerability check's attack."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ..errors import UsageError
from ..validation import check_fraction, check_positive_int


@dataclass(frozen=True)
class AttackSettings:
    """``[tool.miniature.attack]``: the BERT-Attack of the adversarial-vulnerability check.

    Defaults follow TextAttack 0.3.11's ``BERTAttackLi2020`` recipe, minus its Universal
    Sentence Encoder constraint (TensorFlow Hub); ``similarity_model`` puts a local
    encoder's cosine constraint in its place. See docs/attack.md for every difference.
    """

    #: The masked LM that proposes substitutes (a model spec; the paper: BERT-base).
    model: str = "bert-base"
    #: Substitutes per word (BERT-Attack's K: 48 in its paper, 8 in TextAttack 0.3.11's recipe).
    max_candidates: int = 8
    #: At most this share of the words may be changed (the recipe: 0.4) ...
    max_percent: float = 0.4
    #: ... and at most this many (None: no count limit).
    max_words: int | None = None
    #: Model queries allowed per example (None: unlimited); a spent budget ends the attack as failed.
    query_budget: int | None = None
    #: Attack only the first N examples of the attack set (None: all).
    examples: int | None = None
    #: A local encoder (model spec) whose mean-pooled cosine similarity must stay >= the threshold.
    similarity_model: str | None = None
    similarity_threshold: float = 0.2

    @classmethod
    def parse(cls, value: Any) -> AttackSettings:
        owner = "[tool.miniature.attack]"
        if isinstance(value, AttackSettings):
            return value
        if not isinstance(value, dict):
            raise UsageError(f"Expected {owner} to be a table but got {value!r}")
        known = {f.name for f in fields(cls)}
        unknown = set(value) - known
        if unknown:
            raise UsageError(f"Unknown key(s) {', '.join(sorted(unknown))} in {owner}; expected {', '.join(sorted(known))}")
        settings = cls(**value)
        if not isinstance(settings.model, str) or not settings.model:
            raise UsageError(f"Expected model in {owner} to be a masked-LM model spec but got {settings.model!r}")
        if settings.similarity_model is not None and not isinstance(settings.similarity_model, str):
            raise UsageError(f"Expected similarity_model in {owner} to be a model spec but got {settings.similarity_model!r}")
        check_positive_int(settings.max_candidates, "max_candidates", owner)
        if check_fraction(settings.max_percent, "max_percent", owner) == 0:  # TextAttack reads 0 as "no limit"
            raise UsageError(f"The 'max_percent' parameter of {owner} must be above 0 (a share of words). Got 0 instead.")
        check_fraction(settings.similarity_threshold, "similarity_threshold", owner)
        for name in ("max_words", "query_budget", "examples"):
            if getattr(settings, name) is not None:
                check_positive_int(getattr(settings, name), name, owner)
        return settings

    def replace(self, **changes: Any) -> AttackSettings:
        """A copy with the non-None ``changes`` applied, checked again."""
        from dataclasses import asdict

        return AttackSettings.parse({**asdict(self), **{k: v for k, v in changes.items() if v is not None}})
