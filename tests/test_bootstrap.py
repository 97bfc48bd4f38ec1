"""Bootstrap intervals: coverage on synthetic data with a known value, determinism, and the weighted statistics."""

from __future__ import annotations

import numpy as np
import pytest

from miniature.characteristics.bootstrap import bootstrap_interval, weighted_jaccard, weighted_mean


def test_jaccard_interval_covers_the_population_value_about_95_percent_of_the_time():
    # Each point is in both error sets with p = 0.12, in one only with 0.08 + 0.06: J = 0.12 / 0.26.
    truth = 0.12 / 0.26
    rng = np.random.default_rng(1)
    covered, trials, n = 0, 300, 400
    for trial in range(trials):
        kind = rng.choice(4, size=n, p=[0.12, 0.08, 0.06, 0.74])
        in_a, in_b = np.isin(kind, [0, 1]), np.isin(kind, [0, 2])
        low, high = bootstrap_interval(weighted_jaccard(in_a, in_b), n, resamples=400, seed=trial)
        covered += low <= truth <= high
    assert 0.91 <= covered / trials <= 0.985  # nominal 0.95; 300 trials give about +-0.013 of noise


def test_mean_interval_covers_the_population_mean():
    rng = np.random.default_rng(2)
    covered, trials = 0, 300
    for trial in range(trials):
        values = rng.beta(2, 5, size=200)  # mean 2/7
        low, high = bootstrap_interval(weighted_mean(values), 200, resamples=400, seed=trial)
        covered += low <= 2 / 7 <= high
    assert 0.91 <= covered / trials <= 0.985


def test_weighted_statistics_with_unit_counts_are_the_plain_statistics():
    a = np.array([1, 1, 0, 0, 1], dtype=bool)
    b = np.array([1, 0, 1, 0, 1], dtype=bool)
    ones = np.ones((1, 5))
    assert weighted_jaccard(a, b)(ones)[0] == pytest.approx(2 / 4)
    assert weighted_jaccard(np.zeros(5, bool), np.zeros(5, bool))(ones)[0] == 1.0
    assert weighted_mean(np.arange(5.0))(ones)[0] == pytest.approx(2.0)
    # A resample holding point 0 three times and point 3 twice.
    assert weighted_jaccard(a, b)(np.array([[3, 0, 0, 2, 0]]))[0] == pytest.approx(1.0)


def test_intervals_are_seeded_narrow_with_n_and_contain_the_estimate():
    rng = np.random.default_rng(3)
    values = rng.random(1000)
    stat = weighted_mean(values)
    assert bootstrap_interval(stat, 1000, seed=5) == bootstrap_interval(stat, 1000, seed=5)
    wide = bootstrap_interval(weighted_mean(values[:50]), 50)
    narrow = bootstrap_interval(stat, 1000)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]
    assert narrow[0] <= values.mean() <= narrow[1]
    with pytest.raises(ValueError, match="n >= 1"):
        bootstrap_interval(stat, 0)
