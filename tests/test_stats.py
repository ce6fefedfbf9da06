"""rotwatch.stats: exact values for the pure statistics behind rot decisions."""
from __future__ import annotations

import json

import numpy as np
import pytest

from rotwatch.stats import (accuracy_rot, feature_drift, population_stability_index,
                            psi_noise_level, reference_statistics, wilson_interval)


# -- wilson_interval --------------------------------------------------------------------
def test_wilson_8_of_10_matches_published_value():
    lower, upper = wilson_interval(8, 10)
    assert round(lower, 4) == 0.4902
    assert round(upper, 4) == 0.9433


def test_wilson_80_of_100():
    lower, upper = wilson_interval(80, 100)
    assert (round(lower, 4), round(upper, 4)) == (0.7112, 0.8666)


def test_wilson_extremes_stay_inside_unit_interval():
    assert wilson_interval(0, 10)[0] == 0.0
    assert round(wilson_interval(0, 10)[1], 4) == 0.2775
    assert wilson_interval(10, 10)[1] == 1.0
    assert round(wilson_interval(10, 10)[0], 4) == 0.7225


def test_wilson_no_events_knows_nothing():
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_wider_z_gives_wider_interval():
    narrow = wilson_interval(50, 100, z=1.0)
    wide = wilson_interval(50, 100, z=2.576)
    assert wide[0] < narrow[0] < 0.5 < narrow[1] < wide[1]


@pytest.mark.parametrize("correct, n, words", [
    (11, 10, "correct=11 is more than n=10"),
    (-1, 10, "correct=-1"),
    (0, -5, "n=-5"),
])
def test_wilson_rejects_bad_counts_by_name(correct, n, words):
    with pytest.raises(ValueError, match=words):
        wilson_interval(correct, n)


# -- accuracy_rot -------------------------------------------------------------------------
RULE = dict(baseline=0.9, tolerance=0.05, min_n=100, consecutive=3)  # limit is 0.85


def test_rot_when_last_k_windows_are_all_below_the_limit():
    assert accuracy_rot([0.95, 0.80, 0.84, 0.849], [500, 500, 100, 200], **RULE)


def test_upper_bound_equal_to_the_limit_is_not_rot():
    assert accuracy_rot([0.80, 0.80, 0.85], [500] * 3, **RULE) is False
    assert accuracy_rot([0.80, 0.80, 0.8499], [500] * 3, **RULE) is True


def test_a_window_with_too_few_events_breaks_the_run():
    assert accuracy_rot([0.5, 0.5, 0.5], [100, 99, 100], **RULE) is False
    assert accuracy_rot([0.5, 0.5, 0.5], [100, 100, 100], **RULE) is True


def test_k_minus_one_bad_windows_are_not_enough():
    assert accuracy_rot([0.5, 0.5], [500, 500], **RULE) is False
    assert accuracy_rot([0.99, 0.5, 0.5], [500, 500, 500], **RULE) is False


def test_only_the_last_k_windows_count():
    assert accuracy_rot([0.5, 0.5, 0.5, 0.99], [500] * 4, **RULE) is False


def test_rule_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="upper_bounds has 2 windows but ns has 1"):
        accuracy_rot([0.5, 0.5], [10], **RULE)


def test_rule_rejects_bad_consecutive():
    with pytest.raises(ValueError, match="consecutive=0"):
        accuracy_rot([0.5], [10], baseline=0.9, tolerance=0.0, min_n=1, consecutive=0)


# -- reference_statistics ----------------------------------------------------------------
def test_reference_has_quantile_edges_and_smoothed_fractions():
    ref = reference_statistics([[float(i)] for i in range(100)], bins=4)
    feature = ref["features"][0]
    assert ref["n"] == 100 and ref["bins"] == 4
    assert feature["edges"] == [24.75, 49.5, 74.25]
    assert feature["fractions"] == [0.25, 0.25, 0.25, 0.25]
    assert (feature["min"], feature["max"], feature["mean"]) == (0.0, 99.0, 49.5)
    assert round(feature["std"], 4) == 28.8661


def test_reference_is_json_serialisable():
    rng = np.random.default_rng(3)
    ref = reference_statistics(rng.normal(size=(500, 3)))
    assert json.loads(json.dumps(ref)) == ref
    assert len(ref["features"]) == 3
    assert all(len(f["fractions"]) == len(f["edges"]) + 1 for f in ref["features"])
    assert all(abs(sum(f["fractions"]) - 1.0) < 1e-12 for f in ref["features"])


def test_constant_feature_gets_a_bin_of_its_own():
    ref = reference_statistics([[3.0, float(i)] for i in range(1000)], bins=4)
    constant = ref["features"][0]
    assert constant["edges"] == [3.0, float(np.nextafter(3.0, np.inf))]
    assert [round(f, 4) for f in constant["fractions"]] == [0.0005, 0.999, 0.0005]
    assert constant["std"] == 0.0
    # a move up or down from the constant is seen, staying put is not
    assert population_stability_index(constant, [3.0] * 200) < 0.01
    assert population_stability_index(constant, [4.0] * 200) > 1.0
    assert population_stability_index(constant, [2.0] * 200) > 1.0


def test_duplicate_quantiles_are_merged():
    ref = reference_statistics([[float(i % 3)] for i in range(30)], bins=10)
    edges = ref["features"][0]["edges"]
    assert edges == sorted(set(edges))
    assert len(edges) == 6  # three point masses, each with its own bin


def test_reference_rejects_bad_input():
    with pytest.raises(ValueError, match="bins=1"):
        reference_statistics([[1.0]], bins=1)
    with pytest.raises(ValueError, match="2-D"):
        reference_statistics([1.0, 2.0])
    with pytest.raises(ValueError, match="NaN"):
        reference_statistics([[1.0], [float("nan")]])


# -- population_stability_index ----------------------------------------------------------
@pytest.fixture(scope="module")
def normal_reference():
    rng = np.random.default_rng(42)
    return reference_statistics(rng.normal(size=(10000, 2)))


def test_psi_of_the_reference_sample_itself_is_zero():
    rng = np.random.default_rng(42)
    X = rng.normal(size=(10000, 2))
    ref = reference_statistics(X)
    assert population_stability_index(ref["features"][0], X[:, 0]) == 0.0


def test_psi_of_same_distribution_is_near_zero(normal_reference):
    values = np.random.default_rng(7).normal(size=10000)
    psi = population_stability_index(normal_reference["features"][0], values)
    assert round(psi, 4) == 0.0012


def test_psi_of_shifted_distribution_is_over_point_two(normal_reference):
    values = np.random.default_rng(7).normal(loc=1.0, size=10000)
    psi = population_stability_index(normal_reference["features"][0], values)
    assert round(psi, 4) == 0.9224


def test_psi_never_divides_by_zero(normal_reference):
    far_away = [1e6] * 50  # every value in the last bin, all others empty
    psi = population_stability_index(normal_reference["features"][0], far_away)
    assert round(psi, 4) == 3.776


def test_psi_rejects_empty_values(normal_reference):
    with pytest.raises(ValueError, match="values is empty"):
        population_stability_index(normal_reference["features"][0], [])


def test_psi_rejects_a_broken_reference_entry():
    with pytest.raises(ValueError, match="2 edges and 2 fractions"):
        population_stability_index({"edges": [0.0, 1.0], "fractions": [0.5, 0.5]}, [1.0])


# -- feature_drift -----------------------------------------------------------------------
def test_feature_drift_names_only_the_shifted_feature():
    rng = np.random.default_rng(1)
    ref = reference_statistics(rng.normal(size=(2000, 3)))
    window = rng.normal(size=(1000, 3))
    window[:, 2] += 1.5
    drifted = feature_drift(ref, window)
    assert [i for i, _ in drifted] == [2]
    assert round(drifted[0][1], 2) == 2.07


def test_feature_drift_is_empty_below_min_n(normal_reference):
    window = np.full((29, 2), 50.0)
    assert feature_drift(normal_reference, window, min_n=30) == []
    assert [i for i, _ in feature_drift(normal_reference, np.full((30, 2), 50.0))] == [0, 1]


def test_feature_drift_small_stationary_windows_raise_no_false_drift(normal_reference):
    rng = np.random.default_rng(5)
    alarms = sum(bool(feature_drift(normal_reference, rng.normal(size=(30, 2))))
                 for _ in range(200))
    assert alarms == 0


def test_noise_level_shrinks_with_window_size():
    assert round(psi_noise_level(10, 30), 3) == 0.935
    assert round(psi_noise_level(10, 1000), 4) == 0.0281
    assert psi_noise_level(10, 1000, 1000) == pytest.approx(2 * psi_noise_level(10, 1000))


def test_feature_drift_rejects_wrong_feature_count(normal_reference):
    with pytest.raises(ValueError, match="X has 3 features but the reference has 2"):
        feature_drift(normal_reference, np.zeros((50, 3)))
