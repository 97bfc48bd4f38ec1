"""Checks on models: fetch each model's outputs once through its Runner, then apply a characteristic."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from .attack.offline import TEXTATTACK_VERSION
from .characteristics.adversarial import AttackGap, compare_attacks
from .characteristics.bootstrap import RESAMPLES
from .characteristics.distribution import OodAgreement, compare_ood, detect_ood
from .characteristics.prediction_errors import ErrorJaccard, compare_errors
from .characteristics.representation import KnnAgreement, compare_neighbourhoods
from .config import AttackSettings
from .data import EvalSet
from .errors import UsageError
from .runner import Model, Runner
from .validation import check_fraction, check_positive_int


def error_jaccard(
    reference: Model, candidate: Model, eval_set: EvalSet, *, resamples: int = RESAMPLES, record: bool = True
) -> ErrorJaccard:
    """Jaccard of the sets of ``eval_set`` points each model gets wrong (paper, section 3).

    Returns an :class:`~miniature.characteristics.ErrorJaccard`: a float in [0, 1] that
    also carries both accuracies, the set sizes, the subset test and the negative-flip rate.
    ``resamples`` sets the bootstrap of its 95% interval (0: none); ``record=False`` keeps it out
    of the Runner's results (and so out of the summary). The other checks take both too.
    """
    _check_models(reference, candidate, eval_set, "error_jaccard")
    if eval_set.is_qa:
        return _qa_error_jaccard(reference, candidate, eval_set, resamples=resamples, record=record)
    runner = reference.runner
    check = "the prediction-error check"
    ids = eval_set.ids
    per_model = {}
    for model in (reference, candidate):
        outputs = model.outputs(eval_set)
        gold = runner.gold(model, eval_set, check)
        per_model[model] = (outputs.predictions, gold, outputs.probabilities()[np.arange(len(gold)), gold])
    (ref_pred, ref_gold, ref_p), (cand_pred, cand_gold, cand_p) = per_model[reference], per_model[candidate]
    result = compare_errors(
        ids,
        reference_predictions=ref_pred,
        reference_gold=ref_gold,
        candidate_predictions=cand_pred,
        candidate_gold=cand_gold,
        reference_gold_probability=ref_p,
        candidate_gold_probability=cand_p,
        reference=reference.name,
        candidate=candidate.name,
        dataset=eval_set.name,
        resamples=resamples,
    )
    if record:
        runner.record(result)
    return result


def _qa_error_jaccard(reference: Model, candidate: Model, eval_set: EvalSet, *, resamples: int, record: bool) -> ErrorJaccard:
    """Extractive QA: a point is an error when its answer exactly matches no gold answer (SQuAD 2.0 rules;
    answering an unanswerable question is an error). Also reports each model's EM and F1."""
    from .characteristics.squad import exact_match, f1_score

    runner = reference.runner
    check = "the prediction-error check"
    golds = eval_set.require_answers(check)
    scores = {}
    for model in (reference, candidate):
        answers = runner.qa_predictions(model, eval_set, check)
        correct = np.array([exact_match(a, g) for a, g in zip(answers, golds)], dtype=np.int64)
        scores[model] = (correct, float(np.mean([f1_score(a, g) for a, g in zip(answers, golds)])))
    (ref_correct, ref_f1), (cand_correct, cand_f1) = scores[reference], scores[candidate]
    always = np.ones(len(eval_set), dtype=np.int64)  # "correct" is the gold of the correct-or-not prediction
    result = compare_errors(
        eval_set.ids, reference_predictions=ref_correct, reference_gold=always, candidate_predictions=cand_correct,
        candidate_gold=always, reference=reference.name, candidate=candidate.name, dataset=eval_set.name,
        resamples=resamples,
    )
    result.task = "question-answering"
    result.exact_match_reference, result.exact_match_candidate = float(ref_correct.mean()), float(cand_correct.mean())
    result.f1_reference, result.f1_candidate = ref_f1, cand_f1
    result.null_threshold = runner.settings.null_threshold
    if record:
        runner.record(result)
    return result


def _check_models(reference: Any, candidate: Any, eval_set: Any, owner: str) -> None:
    for name, value in (("reference", reference), ("candidate", candidate)):
        if not isinstance(value, Model):
            raise UsageError(
                f"Expected a Model (the {name} fixture, or Runner.model(spec)) but got "
                f"{name}={value!r} (type={type(value).__name__}) in {owner}"
            )
    if reference.runner is not candidate.runner:
        raise UsageError(f"reference and candidate of {owner} come from different Runners; use one Runner for both")
    if not isinstance(eval_set, EvalSet):
        raise UsageError(
            f"Expected an EvalSet (the eval_set fixture, or Runner.dataset(spec)) but got "
            f"eval_set={eval_set!r} (type={type(eval_set).__name__}) in {owner}"
        )


def _sweep_ks(k: int, sweep: Sequence[int], limit: int) -> list[int]:
    """``k`` plus the sweep's values that the data allows (a K sweep must not fail a small set)."""
    return sorted({k, *(s for s in sweep if 1 <= s <= limit)})


def knn_agreement(
    reference: Model,
    candidate: Model,
    eval_set: EvalSet,
    *,
    k: int = 10,
    pooling: str | None = None,
    sweep: Sequence[int] | None = None,
    resamples: int = RESAMPLES,
    record: bool = True,
) -> KnnAgreement:
    """Mean Jaccard of each point's K nearest other points under the two models (paper, section 4).

    Embeddings are the last layer's CLS vectors (``pooling="mean"``: the mean over the
    attention mask), L2-normalised; neighbours by exact cosine search. The result is a float
    (the mean) carrying ``variance``, ``per_point``, and ``sweep`` = {K: (mean, variance)}
    over ``sweep`` (default: the Runner's settings, the paper's Figure 1a/b). Labels are not needed.
    """
    _check_models(reference, candidate, eval_set, "knn_agreement")
    runner = reference.runner
    pooling = pooling or runner.settings.pooling
    k = check_positive_int(k, "k", "knn_agreement")
    if k > len(eval_set) - 1:
        raise UsageError(
            f"The 'k' parameter of knn_agreement must be at most n - 1 = {len(eval_set) - 1} for the "
            f"{len(eval_set)} points of {eval_set.name!r}. Got {k} instead."
        )
    check = "the data-representation check"
    ks = _sweep_ks(k, runner.settings.sweep if sweep is None else sweep, len(eval_set) - 1)
    results = compare_neighbourhoods(
        eval_set.ids,
        runner.embeddings(reference, eval_set, pooling, check),
        runner.embeddings(candidate, eval_set, pooling, check),
        ks=ks, reference=reference.name, candidate=candidate.name, dataset=eval_set.name, pooling=pooling,
        neighbours=tuple(runner.neighbours(m, eval_set, pooling, ks[-1], check) for m in (reference, candidate)),
        resamples=resamples,
    )
    result = results[k]
    result.sweep = {kk: (float(r), r.variance) for kk, r in results.items()}
    if record:
        runner.record(result)
    return result


def ood_agreement(
    reference: Model,
    candidate: Model,
    ood_set: EvalSet,
    *,
    train_set: EvalSet,
    validation_set: EvalSet | None = None,
    k: int = 10,
    tpr: float = 0.95,
    pooling: str | None = None,
    sweep: Sequence[int] | None = None,
    resamples: int = RESAMPLES,
    record: bool = True,
) -> OodAgreement:
    """Jaccard of the challenge points each model flags as out-of-distribution (paper, section 5).

    Each model is a Deep Nearest Neighbors detector (Sun et al. 2022): the score of a point
    is the distance from its L2-normalised embedding to the k-th nearest one of
    ``train_set`` (the in-distribution bank); the threshold keeps ``tpr`` of
    ``validation_set`` (default: a seeded held-out tenth of ``train_set``, at least one
    point). Where ``ood_set`` has in/out flags, each model's AUROC and FPR@TPR95 are reported too.
    """
    _check_models(reference, candidate, ood_set, "ood_agreement")
    for name, value in (("train_set", train_set), ("validation_set", validation_set)):
        if value is not None and not isinstance(value, EvalSet):
            raise UsageError(
                f"Expected an EvalSet (the {name} fixture, or Runner.dataset(spec)) but got "
                f"{name}={value!r} (type={type(value).__name__}) in ood_agreement"
            )
    runner = reference.runner
    pooling = pooling or runner.settings.pooling
    k = check_positive_int(k, "k", "ood_agreement")
    tpr = check_fraction(tpr, "tpr", "ood_agreement")
    check = "the data-distribution check"
    bank_index, val_index = held_out_split(len(train_set)) if validation_set is None else (None, None)
    bank_size = len(bank_index) if bank_index is not None else len(train_set)
    if k > bank_size:
        raise UsageError(
            f"The 'k' parameter of ood_agreement must be at most the bank's size, {bank_size} points of "
            f"{train_set.name!r}. Got {k} instead."
        )
    ks = _sweep_ks(k, runner.settings.sweep if sweep is None else sweep, bank_size)
    is_ood = np.array(ood_set.ood) if ood_set.ood is not None else None

    def detect(model: Model) -> dict:
        train = runner.embeddings(model, train_set, pooling, check)
        if validation_set is None:
            bank, validation = train[bank_index], train[val_index]
        else:
            bank, validation = train, runner.embeddings(model, validation_set, pooling, check)
        challenge = runner.embeddings(model, ood_set, pooling, check)
        return detect_ood(ood_set.ids, bank=bank, validation=validation, challenge=challenge, ks=ks, tpr=tpr, is_ood=is_ood)

    # One detector per model and setting, however many pairs it is in (the all-pairs matrix).
    setting = (train_set.fingerprint, validation_set.fingerprint if validation_set else None, ood_set.fingerprint,
               pooling, tuple(ks), tpr)
    detections = {model: runner.memo(("ood", model.spec.text, *setting), lambda model=model: detect(model))
                  for model in (reference, candidate)}
    ref_d, cand_d = detections[reference], detections[candidate]
    result = compare_ood(
        ood_set.ids, ref_d[k], cand_d[k], reference=reference.name, candidate=candidate.name,
        dataset=ood_set.name, tpr=tpr, pooling=pooling, resamples=resamples,
    )
    result.bank = train_set.name
    result.validation = validation_set.name if validation_set is not None else None  # None: held out of the bank
    result.sweep = {kk: float(compare_ood(ood_set.ids, ref_d[kk], cand_d[kk], resamples=0)) for kk in ks}
    if record:
        runner.record(result)
    return result


def attack_robustness(
    reference: Model,
    candidate: Model,
    attack_set: EvalSet,
    *,
    settings: AttackSettings | None = None,
    resamples: int = RESAMPLES,
    record: bool = True,
    **changes: Any,
) -> AttackGap:
    """How much more accuracy ``candidate`` loses to BERT-Attack than ``reference`` (paper, section 6).

    Both models are attacked on the same examples of ``attack_set`` (labelled) with the
    Runner's ``[tool.miniature.attack]`` settings, or ``settings``, with keyword ``changes``
    (e.g. ``max_candidates=48, examples=100``) applied. Returns an
    :class:`~miniature.characteristics.adversarial.AttackGap`: the candidate's % accuracy drop
    minus the reference's, carrying both Table 3 rows, the Jaccard of the successfully attacked
    sets and the transfer rate of the reference's adversarial examples to the candidate.
    Needs the ``attack`` extra (TextAttack).
    """
    from .attack.offline import import_textattack
    from .attack.runs import attack_outcomes

    _check_models(reference, candidate, attack_set, "attack_robustness")
    import_textattack()  # before any model runs: a missing extra should fail fast
    runner = reference.runner
    settings = (settings or runner.settings.attack).replace(**changes)
    ref_out = runner.memo(("attack", reference.spec.text, attack_set.fingerprint, settings),
                          lambda: attack_outcomes(runner, reference, attack_set, settings))
    cand_out = runner.memo(("attack", candidate.spec.text, attack_set.fingerprint, settings),
                           lambda: attack_outcomes(runner, candidate, attack_set, settings))
    # Transfer: the reference's adversarial texts, shown to the candidate where it was right before.
    tried = [(r.id, r.perturbed_text) for r, c in zip(ref_out, cand_out) if r.status == "successful" and c.status != "skipped"]
    fooled: dict[str, bool] = {}
    if tried:
        adversarial = EvalSet(f"{attack_set.name} attacked on {reference.name}", tuple(i for i, _ in tried),
                              tuple(t for _, t in tried))
        predictions = runner.outputs(candidate, adversarial).predictions
        gold = dict(zip(attack_set.ids, runner.gold(candidate, attack_set, "the adversarial-vulnerability check")))
        fooled = {i: bool(p != gold[i]) for (i, _), p in zip(tried, predictions)}
    result = compare_attacks(
        [o.id for o in ref_out], ref_out, cand_out, transfer_fooled=fooled, reference_name=reference.name,
        candidate_name=candidate.name, dataset=attack_set.name,
        attack={**asdict(settings), "textattack": TEXTATTACK_VERSION}, resamples=resamples,
    )
    if record:
        runner.record(result)
    return result


def held_out_split(n: int, share: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(bank indices, validation indices): a seeded ``share`` of ``n`` points held out for validation."""
    if n < 2:
        raise UsageError(f"The training bank needs at least 2 points to hold some out for validation; it has {n}")
    order = np.random.default_rng(seed).permutation(n)
    held = max(1, round(n * share))
    return np.sort(order[held:]), np.sort(order[:held])


def pair_matrix(runner: Runner, metric: str) -> tuple[list[str], dict[tuple[str, str], float]]:
    """The paper's Table 2 for one characteristic: its agreement for every pair of models.

    The models are those of the Runner's recorded ``metric`` results (each result's
    reference first); each missing pair is computed with the same data set and parameters
    as the first such result, from outputs already in memory. Returns the model names and
    {(row, column): value} for the upper triangle.
    """
    recorded = [r for r in runner.results if r.metric == metric]
    if not recorded:
        return [], {}
    first = recorded[0]
    same = [r for r in recorded if r.dataset == first.dataset and getattr(r, "k", None) == getattr(first, "k", None)
            and getattr(r, "pooling", None) == getattr(first, "pooling", None) and r.reference == first.reference]
    names = [first.reference, *dict.fromkeys(r.candidate for r in same)]
    values = {(first.reference, r.candidate): float(r) for r in same}
    models = {m.name: m for m in runner.known_models}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if (a, b) in values:
                continue
            values[(a, b)] = float(_recompute(runner, metric, first, models[a], models[b]))
    return names, values


def _recompute(runner: Runner, metric: str, like: Any, a: Model, b: Model) -> Any:
    """Pair (a, b) with ``like``'s data and parameters; only the value is shown, so no interval is drawn."""
    used = runner.datasets_used  # every data set of a recorded result went through Runner.outputs
    if metric == "error_jaccard":
        return error_jaccard(a, b, used[like.dataset], resamples=0, record=False)
    if metric == "knn_agreement":
        return knn_agreement(a, b, used[like.dataset], k=like.k, pooling=like.pooling, sweep=(), resamples=0, record=False)
    validation = used[like.validation] if like.validation is not None else None
    return ood_agreement(a, b, used[like.dataset], train_set=used[like.bank], validation_set=validation, k=like.k,
                         tpr=like.tpr, pooling=like.pooling, sweep=(), resamples=0, record=False)
