"""The estimation maths of the timeline, as pure functions over one boot's time samples.

Model (../shared/reference/time-and-durability.md §1.3): during one boot, UTC = m + A(m) where m is
CLOCK_MONOTONIC_RAW and A changes at the raw clock's rate error f (UTC advances (1 + f) ns per raw ns).
A sample says "around raw reading m_i, UTC was U_i ± h_i". From a sample, a punch read at m_e lies in

    [U_i − h_i + Δ(1 + f_lo), U_i + h_i + Δ(1 + f_hi)]      (Δ = m_e − m_i ≥ 0; bounds swap for Δ < 0)

where [f_lo, f_hi] bounds the rate error. With one sample that range is the configured drift bound ρ
(±50 ppm by default). With several, the average rate between two samples is measured
((U_j − U_i ± (h_i + h_j)) / (m_j − m_i) − 1); we assume the rate wanders at most `wander` (a few ppm, e.g.
with temperature) around one value f̄, so f̄ lies in every pair's range widened by `wander`, and the rate
used for extrapolation is that intersection widened by `wander` again. The punch's interval is the
intersection over the nearest samples; its best value comes from a weighted least-squares fit of offset
and rate (weights 1/h², so samples with a long round trip count less).

Before any of that, samples that contradict the majority are set aside (kept as evidence, never used):
for candidate rates we find the largest set of samples whose implied offsets overlap (a 1-D stabbing
problem); ties go to the more trusted sources, then to the earlier samples, so a later liar cannot move an
established estimate.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

PPM = 1e-6
MAX_RATE = 500 * PPM  # the kernel's own limit for a clock's frequency error; beyond it the hardware is broken
NEAREST = 4  # samples on each side of a punch that take part in the intersection (farther ones never win)
MAX_PAIR_WINDOW = 32  # pairs (i, j) with j − i beyond this add nothing but cost
SMALL_SET = 24  # up to this many samples, every pair's rate is tried as a candidate

# Higher = more trusted when two groups of samples contradict each other and neither is a majority.
TRUST = {"server-signed": 5, "kernel-ntp": 4, "gps": 4, "rtc": 3, "manual": 3, "http-date": 2, "zk-settime": 1,
         "adms-datetime": 1}


@dataclass(frozen=True)
class Sample:
    id: int
    source: str
    m_ns: int  # raw monotonic reading the sample refers to (midpoint of send and receive)
    utc_ns: int
    half_ns: int  # half-width of the UTC interval at m_ns, round trip included

    @property
    def trust(self) -> int:
        return TRUST.get(self.source, 0)


@dataclass
class BootFit:
    """What one boot's samples say; `interval(m)` maps a raw reading of that boot to UTC."""

    accepted: list[Sample]
    rejected: list[Sample] = field(default_factory=list)
    rate_lo: float = 0.0  # bounds of the raw clock's average rate error used for extrapolation
    rate_hi: float = 0.0
    rate_hat: float = 0.0  # best estimate of the rate error (0 until measured)
    rate_measured: bool = False
    flags: list[str] = field(default_factory=list)
    _ref_m: int = 0
    _ref_a: int = 0  # UTC − m at _ref_m (ns), the fitted offset
    _ms: list[int] = field(default_factory=list)

    @property
    def anchored(self) -> bool:
        return bool(self.accepted)

    def interval(self, m_ns: int) -> tuple[int, int, int, Sample, bool]:
        """(earliest, latest, best, tightest sample, conflict) of UTC at raw reading m_ns, in ns. `conflict`:
        the samples' intervals did not intersect (an assumption broke); the hull is returned instead."""
        if not self._ms:
            self._ms = [s.m_ns for s in self.accepted]
        k = bisect_left(self._ms, m_ns)
        near = self.accepted[max(0, k - NEAREST): k + NEAREST]
        lo, hi, tightest, width = None, None, near[0], None
        for s in near:
            s_lo, s_hi = self._from_sample(s, m_ns)
            lo = s_lo if lo is None else max(lo, s_lo)
            hi = s_hi if hi is None else min(hi, s_hi)
            if width is None or s_hi - s_lo < width:
                tightest, width = s, s_hi - s_lo
        best = self._ref_a + m_ns + round(self.rate_hat * (m_ns - self._ref_m))
        conflict = lo > hi
        if conflict:  # an assumption broke (e.g. the rate wandered more than allowed): widen, never guess
            lo, hi = hi, lo
        return lo, hi, min(max(best, lo), hi), tightest, conflict

    def _from_sample(self, s: Sample, m_ns: int) -> tuple[int, int]:
        d = m_ns - s.m_ns
        slow, fast = (self.rate_lo, self.rate_hi) if d >= 0 else (self.rate_hi, self.rate_lo)
        return (s.utc_ns - s.half_ns + d + round(d * slow), s.utc_ns + s.half_ns + d + round(d * fast))


def fit_boot(samples: list[Sample], drift_bound_ppm: float, wander_ppm: float) -> BootFit:
    """Select the consistent samples of one boot and fit them. `samples` may be in any order."""
    samples = sorted(samples, key=lambda s: (s.m_ns, s.id))
    if not samples:
        return BootFit(accepted=[])
    bound, wander = drift_bound_ppm * PPM, wander_ppm * PPM
    accepted = select_consistent(samples, bound, wander)
    flags: list[str] = []
    if len(accepted) < len(samples):
        flags.append("sample-contradiction")
    rejected = [s for s in samples if s not in accepted]
    fit = BootFit(accepted=accepted, rejected=rejected, flags=flags)
    _fit_rate(fit, bound, wander)
    return fit


def select_consistent(samples: list[Sample], bound: float, wander: float) -> list[Sample]:
    """The largest set of mutually consistent samples (sorted by m), preferring rates within `bound`."""
    if len(samples) == 1:
        return list(samples)
    best_in = _best_set(samples, _candidate_rates(samples, bound), wander)
    best_out = _best_set(samples, _candidate_rates(samples, MAX_RATE), wander)
    # A rate beyond the configured bound must be backed by clearly more samples: with few samples, a liar
    # and a fast crystal look alike, and the configured bound decides.
    chosen = best_out if len(best_out) >= len(best_in) + 2 else best_in
    chosen = sorted(chosen, key=lambda s: (s.m_ns, s.id))
    while len(chosen) > 1 and _pair_rate_range(chosen, wander) is None:
        chosen = _drop_worst(chosen)
    return chosen


def _candidate_rates(samples: list[Sample], limit: float) -> list[float]:
    """Rates to try: 0, the median rate of neighbouring pairs (robust: a liar spoils only two pairs) and of
    pairs with the best sample, and for few samples every such pair's rate. Clamped to ±limit."""
    best = min(samples, key=lambda s: s.half_ns)
    neighbours = [_rate(a, b) for a, b in zip(samples, samples[1:], strict=False)]
    with_best = [_rate(best, s) for s in samples if s is not best]
    rates = [0.0] + [_median(r) for r in (neighbours, with_best) if r]
    if len(samples) <= SMALL_SET:
        rates += neighbours + with_best
    return sorted({min(max(r, -limit), limit) for r in rates if r is not None})


def _rate(a: Sample, b: Sample) -> float | None:
    dm = b.m_ns - a.m_ns
    return None if dm == 0 else (b.utc_ns - a.utc_ns - dm) / dm


def _median(values: list[float | None]) -> float:
    vals = sorted(v for v in values if v is not None)
    return vals[len(vals) // 2] if vals else 0.0


def _best_set(samples: list[Sample], rates: list[float], wander: float) -> list[Sample]:
    m_mid = samples[len(samples) // 2].m_ns
    best, best_key = [samples[0]], None
    for rate in rates:
        key, group = _stab(samples, rate, wander, m_mid)
        if best_key is None or key > best_key:
            best, best_key = group, key
    return best


def _stab(samples: list[Sample], rate: float, wander: float, m_mid: int) -> tuple[tuple, list[Sample]]:
    """Samples whose offsets (UTC − (1 + rate)·m, widened by wander) share one point: the best such point,
    ranked by (count, trust, earliness). One sweep over sorted end points: O(n log n)."""
    events = []
    for s in samples:
        a = s.utc_ns - s.m_ns - rate * (s.m_ns - m_mid)
        half = s.half_ns + wander * abs(s.m_ns - m_mid)
        events.append((a - half, 0, s))  # 0 = opens (sorts before a close at the same point)
        events.append((a + half, 1, s))
    events.sort(key=lambda e: (e[0], e[1], e[2].id))
    count = trust = ids = 0
    best_key, best_point = None, None
    for point, kind, s in events:
        sign = 1 if kind == 0 else -1
        count, trust, ids = count + sign, trust + sign * s.trust, ids + sign * s.id
        if kind == 0 and (best_key is None or (count, trust, -ids) > best_key):
            best_key, best_point = (count, trust, -ids), point
    group = [s for s in samples if _covers(s, rate, wander, m_mid, best_point)]
    return best_key, group


def _covers(s: Sample, rate: float, wander: float, m_mid: int, point: float) -> bool:
    a = s.utc_ns - s.m_ns - rate * (s.m_ns - m_mid)
    half = s.half_ns + wander * abs(s.m_ns - m_mid)
    return a - half <= point <= a + half


def _pair_rate_range(samples: list[Sample], wander: float) -> tuple[float, float] | None:
    """Intersection over sample pairs of the measured average rate, widened by wander; None if empty."""
    lo, hi = -MAX_RATE, MAX_RATE
    for i, a in enumerate(samples):
        for b in samples[i + 1: i + 1 + MAX_PAIR_WINDOW]:
            dm = b.m_ns - a.m_ns
            if dm <= 0:
                continue
            du = b.utc_ns - a.utc_ns - dm
            slack = a.half_ns + b.half_ns
            lo = max(lo, (du - slack) / dm - wander)
            hi = min(hi, (du + slack) / dm + wander)
    return (lo, hi) if lo <= hi else None


def _drop_worst(samples: list[Sample]) -> list[Sample]:
    """Remove the sample farthest (in units of its own half-width) from the least-trusted-first fit."""
    a, rate, m_ref = _least_squares(samples)

    def badness(s: Sample) -> tuple:
        resid = abs(s.utc_ns - s.m_ns - a - rate * (s.m_ns - m_ref)) / max(s.half_ns, 1)
        return (-s.trust, resid)

    worst = max(samples, key=badness)
    return [s for s in samples if s is not worst]


def _least_squares(samples: list[Sample]) -> tuple[int, float, int]:
    """Weighted fit of offset (UTC − m at m_ref, ns) and rate error; weights 1/h²."""
    weights = [1.0 / max(s.half_ns, 1_000) ** 2 for s in samples]
    total = sum(weights)
    m_ref = samples[0].m_ns
    a_ref = samples[0].utc_ns - samples[0].m_ns
    xs = [s.m_ns - m_ref for s in samples]
    ys = [s.utc_ns - s.m_ns - a_ref for s in samples]
    x_bar = sum(w * x for w, x in zip(weights, xs, strict=True)) / total
    y_bar = sum(w * y for w, y in zip(weights, ys, strict=True)) / total
    sxx = sum(w * (x - x_bar) ** 2 for w, x in zip(weights, xs, strict=True))
    sxy = sum(w * (x - x_bar) * (y - y_bar) for w, x, y in zip(weights, xs, ys, strict=True))
    rate = sxy / sxx if sxx > 0 else 0.0
    return a_ref + round(y_bar - rate * x_bar), rate, m_ref


def _fit_rate(fit: BootFit, bound: float, wander: float) -> None:
    samples = fit.accepted
    measured = _pair_rate_range(samples, wander) if len(samples) > 1 else None
    if measured is None:  # one sample (or no usable pair): offset only, rate within the configured bound
        fit.rate_lo, fit.rate_hi = -bound, bound
        best = min(samples, key=lambda s: s.half_ns)
        fit._ref_m, fit._ref_a, fit.rate_hat = best.m_ns, best.utc_ns - best.m_ns, 0.0
        return
    lo, hi = measured[0] - wander, measured[1] + wander
    fit.rate_measured = (hi - lo) < 2 * bound
    if fit.rate_measured:  # measured more tightly than the assumption: the measurement rules
        fit.rate_lo, fit.rate_hi = lo, hi
    elif max(lo, -bound) <= min(hi, bound):  # still vague: the configured bound narrows it
        fit.rate_lo, fit.rate_hi = max(lo, -bound), min(hi, bound)
    else:
        fit.rate_lo, fit.rate_hi = lo, hi
    a, rate, m_ref = _least_squares(samples)
    fit._ref_a, fit._ref_m = a, m_ref
    fit.rate_hat = min(max(rate, fit.rate_lo), fit.rate_hi)
    if abs(fit.rate_hat) > bound:  # the crystal is worse than configured: raise [time] drift_bound_ppm
        fit.flags.append("drift-exceeds-bound")
