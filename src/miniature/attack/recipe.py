"""BERT-Attack (Li et al. 2020) assembled from TextAttack's components, runnable offline.

The same components as TextAttack 0.3.11's ``BERTAttackLi2020`` recipe:

* transformation: ``WordSwapMaskedLM(method="bert-attack", max_candidates=K)`` on a masked LM
  this project loads from a model spec (so it can be local or tiny);
* constraints: ``RepeatModification``, ``StopwordModification`` (NLTK's English list, shipped
  with this package) and ``MaxWordsPerturbed(max_percent=0.4)``;
* goal: ``UntargetedClassification``; search: ``GreedyWordSwapWIR(wir_method="unk")``.

What differs is listed in docs/attack.md: the recipe's Universal Sentence Encoder constraint
(TensorFlow Hub) is replaced by :class:`EncoderSimilarity` on a local encoder, and only when
one is configured; the masked LM reads at most ``max_length`` tokens (the recipe: 512).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..models import Backend
from .offline import NLTK_DATA, import_textattack
from .settings import AttackSettings

textattack = import_textattack()
# TextAttack warns that it cannot tell whether a model class it does not know suits its goal
# function; this project's wrappers always return classification logits.
logging.getLogger("textattack.shared.utils.install").setLevel(logging.ERROR)

from textattack import Attack  # noqa: E402
from textattack.constraints.overlap import MaxWordsPerturbed  # noqa: E402
from textattack.constraints.pre_transformation import RepeatModification, StopwordModification  # noqa: E402
from textattack.constraints.semantics.sentence_encoders import SentenceEncoder  # noqa: E402
from textattack.goal_functions import UntargetedClassification  # noqa: E402
from textattack.search_methods import GreedyWordSwapWIR  # noqa: E402
from textattack.transformations import WordSwapMaskedLM  # noqa: E402


class BertAttackSwap(WordSwapMaskedLM):
    """``WordSwapMaskedLM(method="bert-attack")`` with BERT-Attack's own handling of multi-piece words.

    For a word the masked LM splits into several sub-word pieces, TextAttack 0.3.11 forms every
    combination of the top ``max_candidates`` tokens per piece (8^pieces of them, each scored
    by a separate loss computation: minutes for one long word) and then keeps the first
    ``max_candidates`` combinations *unranked* (its ``sorted(...)`` result is discarded).
    BERT-Attack's reference implementation takes the top 4 tokens per piece and ranks the
    combinations by the masked LM's perplexity; so does this class, vectorised. Words of
    more than ``max_word_pieces`` pieces (URLs, long numbers) get no substitutes.
    Single-piece words go through TextAttack's code unchanged.
    """

    def __init__(self, *args: Any, bpe_candidates: int = 4, max_word_pieces: int = 8, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bpe_candidates, self.max_word_pieces = bpe_candidates, max_word_pieces

    def _bert_attack_replacement_words(self, current_text, index, id_preds, masked_lm_logits):
        import torch
        from textattack.shared import utils

        pieces = self._lm_tokenizer.encode(current_text.words[index], add_special_tokens=False)
        if len(pieces) <= 1:
            return super()._bert_attack_replacement_words(current_text, index, id_preds, masked_lm_logits)
        if len(pieces) > self.max_word_pieces:
            return []
        masked = current_text.replace_word_at_index(index, self._lm_tokenizer.mask_token)
        ids = self._encode_text(masked.text)["input_ids"].tolist()[0]
        try:
            first = ids.index(self._lm_tokenizer.mask_token_id)
        except ValueError:  # the word lies beyond the masked LM's max_length
            return []
        positions = [p for p in range(first, first + len(pieces)) if p < len(masked_lm_logits)]
        if len(positions) < len(pieces):
            return []
        per_piece = min(self.bpe_candidates, id_preds.shape[1])
        candidates = id_preds[positions, :per_piece]  # (pieces, c) token ids
        log_probs = torch.log_softmax(masked_lm_logits[positions].float(), dim=-1).gather(1, candidates).numpy()
        grid = np.indices((per_piece,) * len(positions)).reshape(len(positions), -1).T  # every combination
        mean_log_prob = log_probs[np.arange(len(positions)), grid].mean(axis=1)  # perplexity = exp(-this)
        words = []
        for row in np.argsort(-mean_log_prob, kind="stable"):
            tokens = candidates[np.arange(len(positions)), grid[row]].tolist()
            word = "".join(self._lm_tokenizer.convert_ids_to_tokens(tokens)).replace("##", "")
            if utils.is_one_word(word):
                words.append(word)
                if len(words) >= self.max_candidates:
                    break
        return words


def english_stopwords() -> set[str]:
    """NLTK's English stopword list, as shipped with this package (read explicitly for reproducibility)."""
    return set((NLTK_DATA / "corpora" / "stopwords" / "english").read_text(encoding="utf-8").split())


class EncoderSimilarity(SentenceEncoder):
    """The recipe's sentence-similarity constraint, on a local encoder instead of TF-Hub's USE.

    Embeddings are the encoder's attention-masked mean of its last hidden states (how
    sentence-transformers models such as all-MiniLM-L6-v2 pool); similarity is cosine between
    the original and the perturbed text (the recipe: ``compare_against_original=True``,
    ``window_size=None``), and must be at least ``threshold``.
    """

    def __init__(self, encoder: Backend, *, threshold: float, batch_size: int, max_length: int) -> None:
        super().__init__(threshold=threshold, metric="cosine", compare_against_original=True, window_size=None)
        self.encoder, self.batch_size, self.max_length = encoder, batch_size, max_length
        self.model = self  # SentenceEncoder._sim_score calls self.model.encode

    def encode(self, sentences: Sequence[str]) -> np.ndarray:
        outputs = self.encoder.run(list(sentences), batch_size=self.batch_size, max_length=self.max_length)
        return outputs.embeddings("mean")

    def extra_repr_keys(self) -> list[str]:
        return ["threshold", "metric"]


def build_attack(
    target: Any,
    *,
    masked_lm: Any,
    lm_tokenizer: Any,
    settings: AttackSettings,
    lm_max_length: int,
    batch_size: int,
    similarity: EncoderSimilarity | None = None,
) -> Attack:
    """The attack on ``target`` (a TextAttack model wrapper) with ``settings``."""
    transformation = BertAttackSwap(
        method="bert-attack", masked_language_model=masked_lm, tokenizer=lm_tokenizer,
        max_candidates=settings.max_candidates, max_length=lm_max_length,
    )
    constraints = [
        RepeatModification(),
        StopwordModification(stopwords=english_stopwords()),
        MaxWordsPerturbed(max_percent=settings.max_percent, max_num_words=settings.max_words),
    ]
    if similarity is not None:
        constraints.append(similarity)
    budget = settings.query_budget if settings.query_budget is not None else float("inf")
    goal = UntargetedClassification(target, query_budget=budget, model_batch_size=batch_size)
    return Attack(goal, constraints, transformation, GreedyWordSwapWIR(wir_method="unk"))
