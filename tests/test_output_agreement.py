"""Output agreement (beyond the paper): top-1 agreement, KL divergence with llama.cpp's statistics, flips both ways."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.special import rel_entr, softmax

from miniature.characteristics.output_agreement import compare_outputs, flip_rates
from miniature.maths import kl_from_logits, kl_statistics, log_softmax, rms_delta_p

CLI = [sys.executable, "-m", "miniature.cli"]


def brute_kl(p_logits: list[float], q_logits: list[float]) -> float:
    """A direct sum over classes, in Python floats: sum_i p_i (log p_i - log q_i)."""
    def probabilities(z: list[float]) -> list[float]:
        top = max(z)
        e = [math.exp(v - top) for v in z]
        return [v / sum(e) for v in e]

    p, q = probabilities(p_logits), probabilities(q_logits)
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q) if pi > 0)


# float16's range: compressed models' logits in half precision must still give finite values.
logit_rows = st.integers(1, 30).flatmap(lambda n: st.integers(2, 12).flatmap(lambda c: st.tuples(
    arrays(np.float64, (n, c), elements=st.floats(-65504, 65504)),
    arrays(np.float64, (n, c), elements=st.floats(-65504, 65504)),
)))


@settings(max_examples=200, deadline=None)
@given(logit_rows)
def test_kl_is_non_negative_finite_and_matches_scipy(pair):
    p_logits, q_logits = pair
    kl = kl_from_logits(p_logits, q_logits)
    assert np.all(np.isfinite(kl)) and np.all(kl >= 0)
    reference = rel_entr(softmax(p_logits, axis=1), softmax(q_logits, axis=1)).sum(axis=1)
    assume(np.all(np.isfinite(reference)))  # scipy's softmax underflows to 0 where ours keeps logs
    assert kl == pytest.approx(np.maximum(reference, 0), rel=1e-6, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(st.tuples(st.integers(1, 20), st.integers(2, 8)).flatmap(lambda shape: st.tuples(
    arrays(np.float64, shape, elements=st.floats(-50, 50)), arrays(np.float64, shape, elements=st.floats(-50, 50)))))
def test_kl_matches_a_direct_sum_and_is_zero_for_identical_models(pair):
    p_logits, q_logits = pair
    kl = kl_from_logits(p_logits, q_logits)
    for row, value in enumerate(kl):
        assert value == pytest.approx(brute_kl(list(p_logits[row]), list(q_logits[row])), rel=1e-7, abs=1e-10)
    assert np.all(kl_from_logits(p_logits, p_logits) == 0)
    # Shifting every logit of a row by a constant changes no probability.
    assert kl_from_logits(p_logits, p_logits + 7.0) == pytest.approx(np.zeros(len(kl)), abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 40).flatmap(lambda n: st.tuples(
    arrays(np.float64, (n, 3), elements=st.floats(-20, 20)), arrays(np.float64, (n, 3), elements=st.floats(-20, 20)),
    arrays(np.int64, n, elements=st.integers(0, 2)))))
def test_top1_is_symmetric_one_for_identical_models_and_flips_add_up_to_the_accuracies(case):
    a, b, gold = case
    ids = [f"p{i}" for i in range(len(gold))]
    correct_a, correct_b = a.argmax(1) == gold, b.argmax(1) == gold
    ab, kl_ab = compare_outputs(ids, a, b, reference_correct=correct_a, candidate_correct=correct_b, resamples=0)
    ba, _ = compare_outputs(ids, b, a, reference_correct=correct_b, candidate_correct=correct_a, resamples=0)
    same, _ = compare_outputs(ids, a, a, resamples=0)
    assert float(ab) == float(ba) == float(np.mean(a.argmax(1) == b.argmax(1))) and float(same) == 1.0
    assert ab.accuracy_candidate == pytest.approx(ab.accuracy_reference - ab.negative_flip_rate + ab.positive_flip_rate)
    assert ab.negative_flip_rate == ba.positive_flip_rate
    assert sorted(ab.disagreeing_ids) == sorted(i for i, x, y in zip(ids, a.argmax(1), b.argmax(1)) if x != y)
    assert kl_ab.top1_agreement == float(ab) and float(kl_ab) == pytest.approx(kl_from_logits(a, b).mean())


def test_llama_cpp_statistics_and_rms_delta_p_by_hand():
    kl = np.arange(101, dtype=np.float64)  # 0..100: percentiles read off directly
    assert kl_statistics(kl) == {"mean": 50.0, "median": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "maximum": 100.0}
    ref = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]))
    cand = np.log(np.array([[0.4, 0.5, 0.1], [0.2, 0.1, 0.7]]))
    # Reference's top classes: 0 (0.7 -> 0.4) and 2 (0.8 -> 0.7).
    assert rms_delta_p(ref, cand) == pytest.approx(math.sqrt(((0.4 - 0.7) ** 2 + (0.7 - 0.8) ** 2) / 2))
    assert flip_rates(np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool)) == (0.25, 0.25)


def test_padding_is_left_out_of_a_distribution():
    padded = np.array([[1.0, 2.0, np.nan]])
    assert np.exp(log_softmax(padded))[0, :2] == pytest.approx(softmax([1.0, 2.0]))
    assert kl_from_logits(padded, np.array([[2.0, 1.0, np.nan]]))[0] == pytest.approx(brute_kl([1.0, 2.0], [2.0, 1.0]))


def test_on_real_models_through_the_session_and_the_gates(tiny_models):
    from miniature import (
        GateFailure,
        Session,
        Settings,
        assert_kl_divergence,
        assert_top1_agreement,
        kl_divergence,
        top1_agreement,
    )

    runner = Session(Settings(cache_dir=None))
    data = runner.dataset(str(tiny_models.eval_csv))
    teacher, student = runner.model(str(tiny_models.teacher)), runner.model(str(tiny_models.student))
    top1, kl = top1_agreement(teacher, student, data), kl_divergence(teacher, student, data)
    ref_logits, cand_logits = teacher.outputs(data).logits, student.outputs(data).logits
    brute = [brute_kl(list(map(float, r)), list(map(float, c))) for r, c in zip(ref_logits, cand_logits)]
    assert float(kl) == pytest.approx(np.mean(brute), rel=1e-6) and kl.maximum == pytest.approx(max(brute), rel=1e-6)
    assert float(top1) == float(np.mean(ref_logits.argmax(1) == cand_logits.argmax(1)))
    assert top1.interval[0] <= float(top1) <= top1.interval[1] and kl.interval[0] <= float(kl) <= kl.interval[1]
    assert float(top1_agreement(teacher, teacher, data)) == 1.0 and float(kl_divergence(teacher, teacher, data)) == 0.0
    # The flips agree with the prediction-error check's accuracies.
    from miniature import error_jaccard

    errors = error_jaccard(teacher, student, data)
    assert top1.accuracy_candidate == pytest.approx(errors.accuracy_candidate)
    assert top1.negative_flip_rate == pytest.approx(errors.negative_flip_rate)
    # The gates take their direction from the characteristic: KL is a maximum, top-1 a minimum.
    assert assert_kl_divergence(teacher, student, data, max=float(kl) + 1e-9) == kl
    with pytest.raises(GateFailure, match=r"(?s)output distribution drifts from .*kl_divergence\s+<= 0\s+.*ids of largest KL"):
        assert_kl_divergence(teacher, student, data, max=0.0)
    with pytest.raises(GateFailure, match=r"(?s)changes .*top prediction on \d+ of 200 points.*top1_agreement\s+>= 1"):
        assert_top1_agreement(teacher, student, data, min=1.0)


def test_a_bare_encoder_has_no_output_distribution(tiny_models):
    from miniature import ModelLoadError, NotApplicable, Session, Settings, kl_divergence

    runner = Session(Settings(cache_dir=None))
    data = runner.dataset(str(tiny_models.eval_csv))
    with pytest.raises(ModelLoadError, match="has no classification head.*which the output-agreement check needs") as raised:
        kl_divergence(runner.model(str(tiny_models.teacher)), runner.model(str(tiny_models.base_encoder)), data)
    assert isinstance(raised.value, NotApplicable)


def test_extractive_qa_compares_answers_and_first_window_span_distributions(tiny_qa_models):
    from miniature import Session, Settings, kl_divergence, top1_agreement

    runner = Session(Settings(cache_dir=None, task="question-answering", max_length=128))
    data = runner.dataset(f"{tiny_qa_models.eval_json}[:40]")
    reference, dropped = runner.model(str(tiny_qa_models.reference)), runner.model(str(tiny_qa_models.dropped))
    top1, kl = top1_agreement(reference, dropped, data), kl_divergence(reference, dropped, data)
    from miniature.tasks.question_answering import answers

    ref_answers, cand_answers = (answers(m.outputs(data), 0.0) for m in (reference, dropped))
    assert float(top1) == float(np.mean([a == b for a, b in zip(ref_answers, cand_answers)]))
    ref_out, cand_out = reference.outputs(data), dropped.outputs(data)
    brute = []
    for q in range(len(data)):
        valid = ~np.isnan(ref_out.start_logits[q])
        brute.append((brute_kl(list(ref_out.start_logits[q][valid]), list(cand_out.start_logits[q][valid]))
                      + brute_kl(list(ref_out.end_logits[q][valid]), list(cand_out.end_logits[q][valid]))) / 2)
    assert float(kl) == pytest.approx(np.mean(brute), rel=1e-5) and kl.task == "question-answering"
    assert float(kl_divergence(reference, reference, data)) == 0.0


def test_compare_writes_both_under_their_metric_names(tiny_models, tmp_path: Path):
    result = subprocess.run(
        [*CLI, "compare", "--reference", str(tiny_models.teacher), "--candidate", str(tiny_models.student),
         "--eval", str(tiny_models.eval_csv), "--threshold", "top1_agreement=0.0", "--threshold", "kl_divergence=1000",
         "--report", "r.json", "--no-cache"], capture_output=True, text=True, cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "output agreement, top-1" in result.stdout and "output agreement, KL(p_ref || p_cand)" in result.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    by_metric = {r["metric"]: r for r in report["results"]}
    assert set(by_metric) == {"top1_agreement", "kl_divergence"}
    assert by_metric["kl_divergence"]["threshold"] == 1000 and by_metric["kl_divergence"]["passed"] is True
    assert report["settings"]["thresholds"] == {"top1_agreement": {"min": 0.0}, "kl_divergence": {"max": 1000.0}}
    assert 0 <= by_metric["top1_agreement"]["value"] <= 1 and by_metric["kl_divergence"]["value"] >= 0
    assert by_metric["top1_agreement"]["value"] == by_metric["kl_divergence"]["top1_agreement"]
    failing = subprocess.run(
        [*CLI, "compare", "--reference", str(tiny_models.teacher), "--candidate", str(tiny_models.student),
         "--eval", str(tiny_models.eval_csv), "--threshold", "kl_divergence=0", "--no-cache"], capture_output=True,
        text=True, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert failing.returncode == 1 and "FAIL (max 0)" in failing.stdout
