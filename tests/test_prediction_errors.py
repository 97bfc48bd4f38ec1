"""Prediction-error characteristic against brute-force references, with hypothesis for the properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from miniature import ErrorJaccard, compare_errors, error_set, jaccard, negative_flip_rate

ids_sets = st.sets(st.integers(0, 40).map(str), max_size=30)


def brute_jaccard(a: set, b: set) -> float:
    """Counts every element of the universe by hand: no set algebra shared with the code under test."""
    universe = sorted(a | b)
    inter = sum(1 for x in universe if x in a and x in b)
    union = sum(1 for x in universe if x in a or x in b)
    return 1.0 if union == 0 else inter / union


@given(ids_sets, ids_sets)
def test_jaccard_matches_brute_force(a, b):
    assert jaccard(a, b) == pytest.approx(brute_jaccard(a, b))


@given(ids_sets, ids_sets)
def test_jaccard_is_symmetric_and_bounded(a, b):
    assert jaccard(a, b) == jaccard(b, a)
    assert 0.0 <= jaccard(a, b) <= 1.0


@given(ids_sets)
def test_jaccard_of_a_set_with_itself_is_one(a):
    assert jaccard(a, a) == 1.0


def test_two_empty_sets_agree_perfectly_and_disjoint_sets_not_at_all():
    assert jaccard(set(), set()) == 1.0
    assert jaccard({"a"}, set()) == 0.0
    assert jaccard({"a"}, {"b"}) == 0.0


labelled_points = st.integers(1, 60).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 2), min_size=n, max_size=n),
        st.lists(st.integers(0, 2), min_size=n, max_size=n),
        st.lists(st.integers(0, 2), min_size=n, max_size=n),
    )
)


@given(labelled_points)
def test_compare_errors_matches_a_per_point_loop(points):
    gold, ref_pred, cand_pred = (np.array(x) for x in points)
    ids = [f"p{i}" for i in range(len(gold))]
    result = compare_errors(ids, reference_predictions=ref_pred, reference_gold=gold,
                            candidate_predictions=cand_pred, candidate_gold=gold)
    e_ref = {ids[i] for i in range(len(ids)) if ref_pred[i] != gold[i]}
    e_cand = {ids[i] for i in range(len(ids)) if cand_pred[i] != gold[i]}
    flips = sum(1 for i in range(len(ids)) if ref_pred[i] == gold[i] and cand_pred[i] != gold[i])
    assert isinstance(result, ErrorJaccard)
    assert float(result) == pytest.approx(brute_jaccard(e_ref, e_cand))
    assert result.errors_reference == len(e_ref) and result.errors_candidate == len(e_cand)
    assert result.errors_both == len(e_ref & e_cand)
    assert result.reference_subset == e_ref.issubset(e_cand)
    assert result.negative_flip_rate == pytest.approx(flips / len(ids))
    assert result.accuracy_reference == pytest.approx(1 - len(e_ref) / len(ids))
    assert set(result.differing_ids) == e_ref ^ e_cand
    assert result.both_empty == (not e_ref and not e_cand)


@given(labelled_points)
def test_compare_errors_is_symmetric_in_its_value_and_identity_gives_one(points):
    gold, ref_pred, cand_pred = (np.array(x) for x in points)
    ids = [str(i) for i in range(len(gold))]
    forward = compare_errors(ids, reference_predictions=ref_pred, reference_gold=gold,
                             candidate_predictions=cand_pred, candidate_gold=gold)
    backward = compare_errors(ids, reference_predictions=cand_pred, reference_gold=gold,
                              candidate_predictions=ref_pred, candidate_gold=gold)
    same = compare_errors(ids, reference_predictions=ref_pred, reference_gold=gold,
                          candidate_predictions=ref_pred, candidate_gold=gold)
    assert float(forward) == float(backward)
    assert float(same) == 1.0 and same.negative_flip_rate == 0.0


def test_result_behaves_like_a_float_and_pickles():
    import pickle

    result = compare_errors(["a", "b", "c"], reference_predictions=np.array([0, 1, 1]), reference_gold=np.array([0, 0, 0]),
                            candidate_predictions=np.array([0, 1, 0]), candidate_gold=np.array([0, 0, 0]))
    assert result == pytest.approx(0.5) and result < 0.6 and f"{result:.2f}" == "0.50"
    assert round(result, 1) == 0.5
    again = pickle.loads(pickle.dumps(result))
    assert again == result and again.differing_ids == ["c"]
    assert result.as_dict()["value"] == 0.5


def test_differing_ids_rank_the_largest_probability_change_first():
    gold = np.array([1, 1, 1, 1])
    result = compare_errors(
        ["a", "b", "c", "d"],
        reference_predictions=np.array([0, 1, 1, 0]), reference_gold=gold,
        candidate_predictions=np.array([1, 0, 0, 0]), candidate_gold=gold,
        reference_gold_probability=np.array([0.4, 0.9, 0.6, 0.1]),
        candidate_gold_probability=np.array([0.6, 0.1, 0.4, 0.2]),
    )
    assert result.differing_ids == ["b", "a", "c"]


def test_error_set_and_flip_rate_reject_inconsistent_inputs():
    with pytest.raises(ValueError, match="one length"):
        error_set(["a", "b"], np.array([0]), np.array([0, 1]))
    with pytest.raises(ValueError, match="n >= 1"):
        negative_flip_rate(set(), set(), 0)
    with pytest.raises(ValueError, match="at least one"):
        compare_errors([], reference_predictions=np.array([]), reference_gold=np.array([]),
                       candidate_predictions=np.array([]), candidate_gold=np.array([]))


def test_docstring_examples_hold():
    import doctest

    from miniature.characteristics import prediction_errors

    assert doctest.testmod(prediction_errors).failed == 0
