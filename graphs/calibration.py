"""Live proxy calibration: how well the proxy ranks the candidates visited so far.

With ground truth (``--truth``) every evaluated candidate gives a (proxy score, true metric)
pair. The Spearman rank correlation over those pairs says whether the proxy is worth following
in the part of the space the search is in: a proxy that correlates well over the whole space can
still be uninformative among the similar networks a search converges on.
"""

from __future__ import annotations

import math
import warnings
from numbers import Real

#: Below this many pairs a rank correlation swings too much to call a proxy uninformative
#: (with 10 pairs, rho has a standard error of about 0.3 under no correlation).
MIN_PAIRS = 10
#: Spearman below this (proxy oriented so that +1 is perfect) is flagged: the proxy ranks the
#: visited candidates little better than chance, so following it is close to a random walk.
UNINFORMATIVE_BELOW = 0.3


def spearman(xs: list[float], ys: list[float]) -> float | None:
    """Return Spearman's rho of ``xs`` and ``ys``; None for fewer than 3 pairs or constant input.

    Raises:
        ValueError: ``xs`` and ``ys`` differ in length.
    """
    if len(xs) != len(ys):
        raise ValueError(f"spearman needs equal lengths, got {len(xs)} and {len(ys)}")
    if len(xs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    from scipy.stats import spearmanr  # only runs with ground truth pay for importing scipy

    with warnings.catch_warnings():  # NaN input gives a warning and NaN; we answer None
        warnings.simplefilter("ignore")
        rho = float(spearmanr(xs, ys).statistic)
    return rho if math.isfinite(rho) else None


def calibration(pairs: list[tuple[float, float]], higher_is_better: bool, metric: str) -> dict:
    """Return ``{"spearman", "n", "informative", "metric"}`` for (proxy score, truth) pairs.

    ``spearman`` is oriented so that +1 means the proxy ranks like the ground truth (its sign is
    flipped for lower-is-better proxies); pairs with a missing or non-finite value are left out,
    and ``n`` counts the pairs used. ``informative`` is None below :data:`MIN_PAIRS` pairs, else
    whether rho reaches :data:`UNINFORMATIVE_BELOW`; a proxy or truth that is constant over the
    visited candidates ranks nothing, so it is uninformative.
    """
    usable = [(float(x), float(y)) for x, y in pairs if _finite(x) and _finite(y)]
    rho = spearman([x for x, _ in usable], [y for _, y in usable])
    if rho is not None and not higher_is_better:
        rho = -rho
    informative = (None if len(usable) < MIN_PAIRS
                   else rho is not None and rho >= UNINFORMATIVE_BELOW)
    return {"spearman": rho, "n": len(usable), "informative": informative, "metric": metric}


def describe(calib: dict) -> str:
    """Return one line for the trace, e.g. ``proxy vs cifar10_test_acc: Spearman 0.62 over 37
    candidates``, flagged `` - UNINFORMATIVE here`` or ``(too few candidates)``."""
    rho = calib.get("spearman")
    shown = f"{rho:.2f}" if isinstance(rho, (int, float)) else "n/a"
    n = calib.get("n", 0)
    line = (f"proxy vs {calib.get('metric') or 'ground truth'}: Spearman {shown} over {n} "
            f"candidate{'' if n == 1 else 's'}")
    if calib.get("informative") is None:
        return f"{line} (too few candidates)"
    if calib["informative"] is False:
        return f"{line} - UNINFORMATIVE here"
    return line


def _finite(value: object) -> bool:
    return (isinstance(value, Real) and not isinstance(value, bool)
            and math.isfinite(value))


__all__ = ["MIN_PAIRS", "UNINFORMATIVE_BELOW", "calibration", "describe", "spearman"]
