"""Reference formulas of the low-stock reorder rule (SPEC §5.6).

The state layer applies the same arithmetic next to the stock it guards; these
pure versions give the figures for a trigger's `reason`, reports and tests.

Policy (s, S): when on_hand falls to or below the reorder point s, order up to S.
Where no reorder point is configured, s is derived from the observed demand:

    s = mu * L + z * sigma * sqrt(L)

with mu and sigma the exponentially weighted mean and standard deviation of the
daily demand, L the lead time in days and z from the service level.
"""

from __future__ import annotations

import math
from statistics import NormalDist

MAX_GAP_DAYS = 366  # empty days closed at most in one step; older demand has decayed anyway
CEIL_TOLERANCE = 1e-9


def z_for_service_level(level: float) -> float:
    """z such that P(N(0, 1) <= z) = level; 0.95 gives 1.6449. `level` in (0, 1)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"service level must be in (0, 1), got {level}")
    return NormalDist().inv_cdf(level)


class DemandRate:
    """An exponentially weighted daily demand rate with its variance.

    Sales are summed per day; a day is folded into the average only once a later
    day is seen (or `roll` is called), so a day still in progress never drags
    the rate down. Days without sales between two observations count as zero
    demand (at most `MAX_GAP_DAYS` of them). A sale for a day before the open
    one counts into the open day: it was late, not missing.
    """

    __slots__ = ("_mu", "_var", "alpha", "closed_days", "open_day", "open_units")

    def __init__(self, alpha: float = 0.2) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self.open_day: int | None = None
        self.open_units: float = 0
        self._mu = 0.0
        self._var = 0.0
        self.closed_days = 0

    def __repr__(self) -> str:
        return (
            f"DemandRate(alpha={self.alpha}, mu={self.mu}, sigma={self.sigma}, "
            f"closed_days={self.closed_days}, open_day={self.open_day}, "
            f"open_units={self.open_units})"
        )

    @property
    def mu(self) -> float | None:
        """Mean daily demand over the closed days; None before the first day closes."""
        return self._mu if self.closed_days else None

    @property
    def sigma(self) -> float | None:
        """Standard deviation of the daily demand; None before the first day closes."""
        return math.sqrt(self._var) if self.closed_days else None

    def observe(self, day: int, units: float) -> None:
        """Count `units` sold on `day` (a day number, e.g. event time // DAY_MS)."""
        if self.open_day is None:
            self.open_day, self.open_units = day, units
        elif day > self.open_day:
            self._advance(day)
            self.open_units = units
        else:
            self.open_units += units

    def roll(self, day: int) -> None:
        """Close every day before `day` without a sale: `day` becomes the open day."""
        if self.open_day is not None and day > self.open_day:
            self._advance(day)
            self.open_units = 0

    def _advance(self, day: int) -> None:
        assert self.open_day is not None
        self._close(self.open_units)
        for _ in range(min(day - self.open_day - 1, MAX_GAP_DAYS)):
            self._close(0)
        self.open_day = day

    def _close(self, x: float) -> None:
        if self.closed_days == 0:
            self._mu, self._var = float(x), 0.0
        else:
            diff = x - self._mu
            incr = self.alpha * diff
            self._mu += incr
            self._var = (1 - self.alpha) * (self._var + diff * incr)
        self.closed_days += 1


def derived_reorder_point(mu: float, sigma: float, lead_time_days: float, z: float) -> float:
    """Expected demand over the lead time plus safety stock: mu·L + z·sigma·√L."""
    return mu * lead_time_days + z * sigma * math.sqrt(lead_time_days)


def order_up_to(
    reorder_point: float, max_level: float | None, mu: float | None, cover_days: float
) -> float:
    """S of the (s, S) policy: `max_level` when configured, else s + cover_days·mu, else 2·s."""
    if max_level is not None:
        return max_level
    if mu is not None:
        return reorder_point + cover_days * mu
    return 2 * reorder_point


def reorder_quantity(order_up_to: float, on_hand: int) -> int:
    """Units to order to bring `on_hand` up to S, rounded up; never negative.

    Float noise just above a whole number (18.000000000000004) is not a unit more,
    as in the state layer.
    """
    return max(0, math.ceil(order_up_to - on_hand - CEIL_TOLERANCE))
