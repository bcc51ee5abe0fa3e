"""Statistics of the analysis, independent of any table: seeded bootstrap and t intervals, paired
tests with their effect sizes, multiple-comparison corrections, and the Pareto front (no torch).

``study.analysis`` applies them to a study's tables; ``study.search`` uses :func:`front_mask` for the
Pareto flags of the trials table.
"""

from __future__ import annotations

import numpy as np

from foundations import seeds

def group_seed(seed: int, *key) -> int:
    """A seed per group, stable across processes and independent of the order of groups."""
    return seeds.named(seed, *key, bits=32)


def bootstrap_ci(values, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0,
                 method: str = "percentile") -> tuple[float, float]:
    """Bootstrap confidence interval of the mean of the finite ``values`` (``scipy.stats.bootstrap``).

    NaN for fewer than 2 values; (v, v) when all values are equal (no spread to resample).
    """
    from scipy import stats

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return float("nan"), float("nan")
    if np.all(v == v[0]):
        return float(v[0]), float(v[0])
    res = stats.bootstrap((v,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                          method=method, vectorized=True, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def holm(p) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaN stays NaN."""
    p = np.asarray(p, float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adj, 1.0)
    return out


def adjust(p, method: str = "holm") -> np.ndarray:
    """Multiple-comparison correction: ``holm`` or ``bh`` (``scipy.stats.false_discovery_control``)."""
    from scipy import stats

    p = np.asarray(p, float)
    if method == "holm":
        return holm(p)
    if method in ("bh", "by"):
        out = np.full_like(p, np.nan)
        ok = np.isfinite(p)
        if ok.any():
            out[ok] = stats.false_discovery_control(p[ok], method=method)
        return out
    if method == "none":
        return p.copy()
    raise ValueError(f"unknown correction {method!r}; valid: holm, bh, by, none")


def paired_test(a, b) -> dict:
    """Wilcoxon signed-rank test of a − b (two-sided, zeros dropped) and effect sizes.

    Returns n, mean_diff, statistic, p_value, rank_biserial (matched pairs: (T+ − T−)/(T+ + T−)
    over the non-zero differences, in [−1, 1], positive when a > b) and cohens_d (d_z = mean /
    SD of the differences). Identical inputs give p = 1 and zero effects.
    """
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    d = a[ok] - b[ok]
    n = len(d)
    out = {"n": n, "mean_diff": float(d.mean()) if n else np.nan, "statistic": np.nan, "p_value": np.nan,
           "rank_biserial": np.nan, "cohens_d": np.nan}
    if n == 0:
        return out
    nz = d[d != 0]
    if len(nz) == 0:
        return {**out, "statistic": 0.0, "p_value": 1.0, "rank_biserial": 0.0, "cohens_d": 0.0}
    r = stats.rankdata(np.abs(nz))
    tp, tm = r[nz > 0].sum(), r[nz < 0].sum()
    out["rank_biserial"] = float((tp - tm) / (tp + tm))
    sd = d.std(ddof=1) if n > 1 else np.nan
    out["cohens_d"] = float(d.mean() / sd) if n > 1 and sd > 0 else np.nan
    try:
        res = stats.wilcoxon(nz, zero_method="wilcox", alternative="two-sided")
        out["statistic"], out["p_value"] = float(res.statistic), float(res.pvalue)
    except ValueError:
        pass
    return out


def front_mask(acc, score) -> np.ndarray:
    """True where no other point is >= in both and > in one (maximising both); NaN never on it."""
    a, b = np.asarray(acc, float), np.asarray(score, float)
    ok = np.isfinite(a) & np.isfinite(b)
    out = np.zeros(len(a), bool)
    for i in np.flatnonzero(ok):
        dom = ok & (a >= a[i]) & (b >= b[i]) & ((a > a[i]) | (b > b[i]))
        out[i] = not dom.any()
    return out


def t_interval(values, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean of the finite ``values`` (NaN for fewer than 2)."""
    from scipy import stats

    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return float("nan"), float("nan")
    m, se = float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v)))
    if se == 0:
        return m, m
    h = float(stats.t.ppf(0.5 + confidence / 2, len(v) - 1)) * se
    return m - h, m + h
