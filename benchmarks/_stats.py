"""Statistics of interleaved benchmark rounds: the median of per-round medians and
bootstrap intervals for ratios. Pure NumPy, no timing, so the tests can check it.

A run times several configurations in R rounds; in each round every
configuration runs a few steps, one configuration after another, in a random
order. ``rounds[k]`` is the list of one configuration's per-step times (any
unit) in round k.

    centre(rounds)        = median_k( median(rounds[k]) )
    ratio(a, b)           = centre(a) / centre(b)

The median of per-round medians is robust against a few slow steps (a page
fault, another process waking up) and against one disturbed round. The 95%
interval of a ratio comes from a percentile bootstrap over ROUNDS, paired:
each resample draws R round indices with replacement and uses the SAME indices
for both configurations, because round k of both ran within seconds of each
other and shares whatever the machine was doing then. Resampling single steps
instead would pretend that steps within a round are independent (they are
not: they share the round's machine state) and give intervals that are too
narrow.
"""
import numpy as np


def round_medians(rounds):
    """(R,) array: the median step time of each round."""
    if len(rounds) == 0 or any(len(r) == 0 for r in rounds):
        raise ValueError("every round needs at least one timed step")
    return np.array([np.median(r) for r in rounds], dtype=np.float64)


def centre(rounds):
    """The median of per-round medians."""
    return float(np.median(round_medians(rounds)))


def bootstrap_ratio(num_rounds, den_rounds, n_boot=4000, level=0.95, seed=0):
    """(ratio, low, high): centre(num) / centre(den) and its percentile-bootstrap interval.

    ``num_rounds`` and ``den_rounds`` must have the same number of rounds R (the
    rounds of one interleaved run); resample b draws indices i_1..i_R uniformly
    with replacement and computes median_j(m_num[i_j]) / median_j(m_den[i_j]).
    The interval is the (1-level)/2 and (1+level)/2 percentiles of the n_boot
    resampled ratios. Seeded: the same inputs give the same interval.
    """
    a, b = round_medians(num_rounds), round_medians(den_rounds)
    if a.size != b.size:
        raise ValueError(f"paired rounds needed: {a.size} vs {b.size}")
    idx = np.random.default_rng(seed).integers(0, a.size, size=(n_boot, a.size))
    boot = np.median(a[idx], axis=1) / np.median(b[idx], axis=1)
    lo, hi = np.percentile(boot, [50 * (1 - level), 50 * (1 + level)])
    return float(np.median(a) / np.median(b)), float(lo), float(hi)


def summary(rounds, batch, flop_per_image):
    """Summary of one configuration's rounds (seconds per step) for the JSON and the tables.

    median_ms: the median of per-round medians; p10_ms / p90_ms / min_ms over all
    steps; n steps, R rounds; images/s and GFLOP/s at the median.
    """
    t = np.concatenate([np.asarray(r, dtype=np.float64) for r in rounds]) * 1e3
    med = centre(rounds) * 1e3
    return {"median_ms": med, "p10_ms": float(np.percentile(t, 10)), "p90_ms": float(np.percentile(t, 90)),
            "min_ms": float(t.min()), "n": int(t.size), "rounds": len(rounds),
            "images_per_s": batch / med * 1e3, "gflops": flop_per_image * batch / med / 1e6}
