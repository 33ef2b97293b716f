"""Detection and segmentation metrics of the paper, in plain numpy (no scikit-learn).

Conventions used throughout this module:

* Detection treats **fake as the positive class**: ``y_true_fake`` is 1 for a manipulated face, 0 for a real one,
  and a larger ``score`` (e.g. ``p_fake``) means "more likely fake". (The model's class indices follow the paper,
  1 = real; callers convert with ``y_true_fake = 1 - label``.)
* A face is judged fake when ``score > threshold`` (strictly), the same rule as ``ClassNSeg.predict``.
* Masks are (N, H, W) (or (H, W) for one image), either 0/1 or probabilities; a pixel is "manipulated" when its
  value is > 0.5, so a predicted probability of exactly 0.5 is pristine (the argmax of the two-channel
  segmentation output breaks that tie the same way).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "roc_auc",
    "roc_curve",
    "equal_error_rate",
    "accuracy",
    "pixel_accuracy_per_image",
    "segmentation_accuracy",
    "mask_iou_per_image",
    "mask_iou",
    "fpr_at_threshold",
    "tpr_at_threshold",
    "threshold_for_fpr",
    "binomial_interval",
    "clustered_rate_interval",
    "brier_score",
    "expected_calibration_error",
]


def _binary_labels(y) -> np.ndarray:
    y = np.asarray(y).reshape(-1)
    if y.dtype == bool:
        return y.astype(np.int64)
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0/1 (1 = fake, the positive class)")
    return y.astype(np.int64)


def _scores(score, n: int) -> np.ndarray:
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    if s.shape[0] != n:
        raise ValueError(f"{n} labels but {s.shape[0]} scores")
    return s


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks (as in the Mann-Whitney U statistic)."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # boundaries of runs of equal values
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_x)) + 1]
    ends = np.r_[starts[1:], len(x)]
    avg = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def roc_auc(y_true_fake, score) -> float:
    """Area under the ROC curve = P(score of a random fake > score of a random real) + 0.5 P(tie).

    Computed from the Mann-Whitney U statistic with average ranks. NaN when either class is absent.
    """
    y = _binary_labels(y_true_fake)
    s = _scores(score, len(y))
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(s)
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_curve(y_true_fake, score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) for the rule "fake when score >= threshold", thresholds decreasing over the distinct
    scores, starting with +inf (nothing flagged: fpr = tpr = 0) and ending at the smallest score (fpr = tpr = 1).

    Tied scores form a single ROC point, so a tie between a real and a fake is a diagonal step of the curve.
    """
    y = _binary_labels(y_true_fake)
    s = _scores(score, len(y))
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("the ROC curve needs both real and fake samples")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s) - 1]
    tp = np.cumsum(y_sorted)[last_of_run]
    fp = (last_of_run + 1) - tp
    tpr = np.r_[0.0, tp / n_pos]
    fpr = np.r_[0.0, fp / n_neg]
    thresholds = np.r_[np.inf, s_sorted[last_of_run]]
    return fpr, tpr, thresholds


def equal_error_rate(y_true_fake, score) -> tuple[float, float]:
    """(EER, threshold): the rate where the false-positive rate (reals flagged) equals the false-negative rate
    (fakes missed), found where the ROC curve crosses FNR = FPR, linearly interpolated between the two ROC points
    that bracket the crossing (a tie between a real and a fake thus counts half, as random tie-breaking would).

    The threshold is interpolated between those two points' thresholds the same way (the point's own threshold
    when the other one is +inf); with few distinct scores it is nominal: the error rates at exactly that
    threshold are those of a neighbouring ROC point. NaN, NaN when either class is absent.
    """
    y = _binary_labels(y_true_fake)
    if y.sum() == 0 or y.sum() == len(y):
        return float("nan"), float("nan")
    fpr, tpr, thr = roc_curve(y, score)
    fnr = 1.0 - tpr
    d = fpr - fnr  # increases from -1 (threshold +inf) to +1 (lowest threshold)
    i = int(np.flatnonzero(d >= 0)[0])  # exists: d[-1] = 1; i >= 1 since d[0] = -1
    t = d[i - 1] / (d[i - 1] - d[i])  # in (0, 1]
    eer = fpr[i - 1] + t * (fpr[i] - fpr[i - 1])
    threshold = thr[i] if not np.isfinite(thr[i - 1]) else thr[i - 1] + t * (thr[i] - thr[i - 1])
    return float(eer), float(threshold)


def accuracy(y, pred) -> float:
    """Fraction of predictions equal to the labels (any label encoding, as long as both use the same)."""
    y, pred = np.asarray(y).reshape(-1), np.asarray(pred).reshape(-1)
    if y.shape != pred.shape:
        raise ValueError(f"{y.shape[0]} labels but {pred.shape[0]} predictions")
    return float(np.mean(y == pred)) if len(y) else float("nan")


def _binary_masks(mask_true, mask_pred) -> tuple[np.ndarray, np.ndarray]:
    t, p = np.asarray(mask_true), np.asarray(mask_pred)
    if t.shape != p.shape:
        raise ValueError(f"mask shapes differ: {t.shape} vs {p.shape}")
    if t.ndim == 2:
        t, p = t[None], p[None]
    if t.ndim != 3:
        raise ValueError(f"masks must be HxW or NxHxW, got {t.shape}")
    return (t > 0.5).reshape(len(t), -1), (p > 0.5).reshape(len(p), -1)


def pixel_accuracy_per_image(mask_true, mask_pred) -> np.ndarray:
    """(N,) fraction of pixels whose manipulated/pristine state is predicted correctly, per image."""
    t, p = _binary_masks(mask_true, mask_pred)
    return (t == p).mean(axis=1)


def segmentation_accuracy(mask_true, mask_pred) -> float:
    """The paper's segmentation metric: per-image pixel accuracy (masks binarised at 0.5), averaged over images."""
    per_image = pixel_accuracy_per_image(mask_true, mask_pred)
    return float(per_image.mean()) if len(per_image) else float("nan")


def mask_iou_per_image(mask_true, mask_pred) -> np.ndarray:
    """(N,) intersection over union of the manipulated regions, per image.

    An image whose true and predicted masks are both empty scores 1.0 (nothing manipulated, nothing claimed: a
    perfect answer); a non-empty mask against an empty one scores 0.0. Meant for fakes, where the true mask is
    non-empty; on reals it only says whether any pixel was flagged.
    """
    t, p = _binary_masks(mask_true, mask_pred)
    inter = np.logical_and(t, p).sum(axis=1)
    union = np.logical_or(t, p).sum(axis=1)
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def mask_iou(mask_true, mask_pred) -> float:
    """Mean per-image IoU (see ``mask_iou_per_image`` for the empty-vs-empty case)."""
    per_image = mask_iou_per_image(mask_true, mask_pred)
    return float(per_image.mean()) if len(per_image) else float("nan")


def fpr_at_threshold(y_true_fake, score, threshold: float) -> float:
    """Fraction of real faces (y = 0) judged fake (score > threshold). NaN without reals."""
    y = _binary_labels(y_true_fake)
    s = _scores(score, len(y))
    reals = s[y == 0]
    return float(np.mean(reals > threshold)) if len(reals) else float("nan")


def tpr_at_threshold(y_true_fake, score, threshold: float) -> float:
    """Fraction of fakes (y = 1) caught (score > threshold). NaN without fakes."""
    y = _binary_labels(y_true_fake)
    s = _scores(score, len(y))
    fakes = s[y == 1]
    return float(np.mean(fakes > threshold)) if len(fakes) else float("nan")


def threshold_for_fpr(scores_of_reals, target_fpr: float) -> float:
    """The smallest threshold (among the reals' own scores) at which at most ``target_fpr`` of these reals are
    judged fake (score > threshold).

    With n reals, k = floor(target_fpr * n) of them may lie above the threshold, so it is the (k+1)-th largest
    real score; the achieved false-positive rate on these reals is <= target_fpr (lower when scores tie there).
    When every real may be flagged (k >= n) it is just below the smallest score.
    """
    s = np.sort(np.asarray(scores_of_reals, dtype=np.float64).reshape(-1))[::-1]
    if len(s) == 0:
        raise ValueError("threshold_for_fpr needs the scores of at least one real face")
    if not 0.0 <= target_fpr <= 1.0:
        raise ValueError(f"target_fpr must be in [0, 1], got {target_fpr}")
    k = int(np.floor(target_fpr * len(s) + 1e-9))  # the epsilon keeps 0.07 * 100 from flooring to 6
    if k >= len(s):
        return float(np.nextafter(s[-1], -np.inf))
    return float(s[k])


def binomial_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval for a rate of ``k`` events in ``n`` independent trials, e.g. the share of
    validation reals flagged at a threshold: with 2 of 919 the rate reads 0.22%, but anything from about 0.03% to
    0.78% fits those counts at 95%. (NaN, NaN) when n = 0.
    """
    from scipy.special import betaincinv  # scipy comes with scikit-image

    if n <= 0:
        return float("nan"), float("nan")
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    alpha = 1.0 - level
    lo = 0.0 if k == 0 else float(betaincinv(k, n - k + 1, alpha / 2))
    hi = 1.0 if k == n else float(betaincinv(k + 1, n - k, 1 - alpha / 2))
    return lo, hi


def clustered_rate_interval(flags_by_group, level: float = 0.95, n_boot: int = 10000,
                            seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval for a pooled rate (all flags over all items) when the items come in groups
    that are not independent, such as the frames of one video clip: whole groups are resampled with replacement.

    ``flags_by_group`` is a list of 0/1 arrays, one per group (empty groups are ignored). (NaN, NaN) without items.
    """
    groups = [np.asarray(g, dtype=np.float64).reshape(-1) for g in flags_by_group]
    groups = [g for g in groups if len(g)]
    if not groups:
        return float("nan"), float("nan")
    hits = np.array([g.sum() for g in groups])
    sizes = np.array([len(g) for g in groups], dtype=np.float64)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(groups), size=(n_boot, len(groups)))
    rates = hits[pick].sum(axis=1) / sizes[pick].sum(axis=1)
    alpha = 1.0 - level
    lo, hi = np.quantile(rates, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def brier_score(y_true_fake, p_fake) -> float:
    """Mean squared error between the probability of "fake" and the 0/1 truth."""
    y = _binary_labels(y_true_fake)
    p = _scores(p_fake, len(y))
    return float(np.mean((p - y) ** 2))


def expected_calibration_error(y_true_fake, p_fake, n_bins: int = 10) -> float:
    """ECE over ``n_bins`` equal-width bins of p_fake: sum over bins of (bin share) x |mean p - fraction fake|."""
    y = _binary_labels(y_true_fake)
    p = _scores(p_fake, len(y))
    bins = np.clip((p * n_bins).astype(np.int64), 0, n_bins - 1)  # p = 1 goes into the last bin
    ece = 0.0
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            ece += sel.mean() * abs(p[sel].mean() - y[sel].mean())
    return float(ece)
