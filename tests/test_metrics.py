"""Metrics against values computed by hand."""

import math

import numpy as np
import pytest

from train import metrics as M


# --- AUC --------------------------------------------------------------------------------------------------------
def test_auc_small_known_case():
    # fakes 0.35, 0.8 vs reals 0.1, 0.4: of the 4 (fake, real) pairs, 3 are ordered correctly
    assert M.roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)


def test_auc_perfect_inverted_and_ties():
    assert M.roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert M.roc_auc([0, 0, 1, 1], [0.8, 0.9, 0.1, 0.2]) == 0.0
    assert M.roc_auc([0, 0, 1, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    # reals 0.1, 0.5; fakes 0.5, 0.9: pairs (0.5,0.1)=1, (0.5,0.5)=1/2, (0.9,.)=1+1 -> 3.5/4
    assert M.roc_auc([0, 0, 1, 1], [0.1, 0.5, 0.5, 0.9]) == pytest.approx(0.875)


def test_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200) + 0.3 * y, 1)  # rounding makes many ties
    pos, neg = s[y == 1], s[y == 0]
    pairwise = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))
    assert M.roc_auc(y, s) == pytest.approx(pairwise)


def test_auc_one_class_is_nan():
    assert math.isnan(M.roc_auc([1, 1], [0.2, 0.3]))


# --- ROC and EER ------------------------------------------------------------------------------------------------
def test_roc_curve_points():
    fpr, tpr, thr = M.roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(thr, [np.inf, 0.8, 0.4, 0.35, 0.1])


def test_eer_on_a_roc_point():
    # at threshold 0.4 (fake when >= 0.4): the real 0.4 is flagged (FPR 1/2), the fake 0.35 missed (FNR 1/2)
    eer, thr = M.equal_error_rate([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert eer == pytest.approx(0.5)
    assert thr == pytest.approx(0.4)


def test_eer_interpolated_through_a_tie():
    # reals 0.1, 0.5; fakes 0.5, 0.9. ROC: (FPR, FNR) = (0, 1/2) at 0.9, (1/2, 0) at 0.5 -> they cross at 1/4
    eer, thr = M.equal_error_rate([0, 0, 1, 1], [0.1, 0.5, 0.5, 0.9])
    assert eer == pytest.approx(0.25)
    assert thr == pytest.approx(0.7)  # half-way between 0.9 and 0.5


def test_eer_larger_case():
    # reals 0.1 0.2 0.3 0.6, fakes 0.4 0.7 0.8 0.9: at threshold 0.6, one real flagged (1/4), one fake missed (1/4)
    y = [0, 0, 0, 0, 1, 1, 1, 1]
    s = [0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9]
    eer, thr = M.equal_error_rate(y, s)
    assert eer == pytest.approx(0.25)
    assert thr == pytest.approx(0.6)
    assert M.roc_auc(y, s) == pytest.approx(15 / 16)  # only (fake 0.4, real 0.6) is misordered


def test_eer_perfect_inverted_constant():
    assert M.equal_error_rate([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == (0.0, 0.8)
    assert M.equal_error_rate([0, 0, 1, 1], [0.8, 0.9, 0.1, 0.2])[0] == pytest.approx(1.0)
    assert M.equal_error_rate([0, 0, 1, 1], [0.5] * 4) == (pytest.approx(0.5), 0.5)
    assert all(math.isnan(v) for v in M.equal_error_rate([0, 0], [0.1, 0.2]))


# --- accuracy, thresholds ---------------------------------------------------------------------------------------
def test_accuracy():
    assert M.accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    assert M.accuracy(np.array([True, False]), np.array([True, False])) == 1.0


def test_fpr_tpr_at_threshold_strict():
    y = [0, 0, 0, 0, 1, 1]
    s = [0.1, 0.5, 0.6, 0.9, 0.5, 0.95]
    assert M.fpr_at_threshold(y, s, 0.5) == 0.5  # 0.6 and 0.9; 0.5 itself is not > 0.5
    assert M.tpr_at_threshold(y, s, 0.5) == 0.5


def _binomial_tail(k_from: int, n: int, p: float) -> float:
    """P(X >= k_from) for X ~ Binomial(n, p), summed by hand."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k_from, n + 1))


def test_binomial_interval_known_cases():
    # no event in 10 trials: the upper end solves (1 - p)^10 = 0.025; all 10: the lower end solves p^10 = 0.025
    assert M.binomial_interval(0, 10) == (0.0, pytest.approx(1 - 0.025 ** 0.1))
    assert M.binomial_interval(10, 10) == (pytest.approx(0.025 ** 0.1), 1.0)
    assert M.binomial_interval(1, 1) == (pytest.approx(0.025), 1.0)
    # 2 of 919 (the shipped threshold's validation count): each end leaves 2.5% of the binomial mass beyond the count
    lo, hi = M.binomial_interval(2, 919)
    assert _binomial_tail(2, 919, lo) == pytest.approx(0.025, abs=1e-6)
    assert 1 - _binomial_tail(3, 919, hi) == pytest.approx(0.025, abs=1e-6)
    assert lo < 2 / 919 < hi
    assert all(math.isnan(x) for x in M.binomial_interval(0, 0))
    with pytest.raises(ValueError):
        M.binomial_interval(3, 2)


def test_clustered_rate_interval():
    # every clip flags a quarter of its frames: every resample gives 0.25
    assert M.clustered_rate_interval([[1, 0, 0, 0], [0, 1, 0, 0, 0, 1, 0, 0]]) == pytest.approx((0.25, 0.25))
    # one clip of ten holds every flagged frame: the pooled rate is 0.1, but a resample of ten clips picks it
    # k ~ Binomial(10, 0.1) times, rate k / 10, so the 2.5% / 97.5% points are 0 and 0.3 (P(k <= 2) = 0.930,
    # P(k <= 3) = 0.987)
    groups = [np.ones(10)] + [np.zeros(10)] * 9
    lo, hi = M.clustered_rate_interval(groups, seed=1)
    assert lo == 0.0 and hi == pytest.approx(0.3)
    assert all(math.isnan(x) for x in M.clustered_rate_interval([[], []]))


def test_threshold_for_fpr():
    reals = np.arange(1, 11) / 10  # 0.1 .. 1.0
    t = M.threshold_for_fpr(reals, 0.1)
    assert t == pytest.approx(0.9)
    assert np.mean(reals > t) == pytest.approx(0.1)
    assert M.threshold_for_fpr(reals, 0.05) == 1.0  # k = 0: no real may be flagged
    assert M.threshold_for_fpr(reals, 0.0) == 1.0
    assert np.mean(reals > M.threshold_for_fpr(reals, 1.0)) == 1.0
    reals100 = np.linspace(0, 1, 100)
    assert np.mean(reals100 > M.threshold_for_fpr(reals100, 0.07)) == pytest.approx(0.07)


# --- masks ------------------------------------------------------------------------------------------------------
def test_segmentation_accuracy_per_image_mean():
    t = np.zeros((2, 4, 4))
    t[0, :2] = 1  # image 0: top half manipulated
    p = np.zeros((2, 4, 4))
    p[0, :1] = 0.9  # predicts the first row only: 12/16 right
    p[1, 0, 0] = 0.7  # image 1: one false pixel: 15/16 right
    p[1, 0, 1] = 0.5  # exactly 0.5 is pristine
    np.testing.assert_allclose(M.pixel_accuracy_per_image(t, p), [12 / 16, 15 / 16])
    assert M.segmentation_accuracy(t, p) == pytest.approx((12 / 16 + 15 / 16) / 2)


def test_mask_iou_cases():
    t = np.zeros((3, 4, 4))
    p = np.zeros((3, 4, 4))
    t[0, :2] = 1
    p[0, 1:3] = 1  # intersection 4, union 12
    t[1, 0, 0] = 1  # non-empty truth, empty prediction -> 0
    # image 2: both empty -> 1 by definition
    np.testing.assert_allclose(M.mask_iou_per_image(t, p), [4 / 12, 0.0, 1.0])
    assert M.mask_iou(t[0], p[0]) == pytest.approx(1 / 3)


# --- calibration quality ----------------------------------------------------------------------------------------
def test_brier_and_ece():
    y = [0, 1, 1, 0]
    p = [0.0, 1.0, 0.5, 0.5]
    assert M.brier_score(y, p) == pytest.approx((0 + 0 + 0.25 + 0.25) / 4)
    # bins: {0.0}: |0-0|, {1.0}: |1-1|, {0.5, 0.5}: |0.5 - 0.5| -> 0
    assert M.expected_calibration_error(y, p) == pytest.approx(0.0)
    # all at 0.9, half fake: one bin, |0.9 - 0.5|
    assert M.expected_calibration_error([0, 1], [0.9, 0.9]) == pytest.approx(0.4)
