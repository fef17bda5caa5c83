"""Reorder formulas and the daily demand rate (SPEC §5.6)."""

from __future__ import annotations

import math

import pytest

from operators.inventory import (
    MAX_GAP_DAYS,
    DemandRate,
    derived_reorder_point,
    order_up_to,
    reorder_quantity,
    z_for_service_level,
)

# --- z ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "z"), [(0.95, 1.6449), (0.99, 2.3263), (0.9, 1.2816), (0.5, 0.0), (0.2, -0.8416)]
)
def test_z_for_service_level(level: float, z: float) -> None:
    assert z_for_service_level(level) == pytest.approx(z, abs=1e-4)


@pytest.mark.parametrize("level", [0.0, 1.0, -0.5, 95.0])
def test_service_level_outside_the_open_unit_interval_is_refused(level: float) -> None:
    with pytest.raises(ValueError, match="service level"):
        z_for_service_level(level)


# --- DemandRate --------------------------------------------------------------------------


def test_no_rate_until_a_day_has_closed() -> None:
    rate = DemandRate(alpha=0.5)
    assert (rate.mu, rate.sigma, rate.closed_days) == (None, None, 0)
    rate.observe(10, 4)
    rate.observe(10, 2)
    assert (rate.mu, rate.sigma, rate.closed_days) == (None, None, 0)


def test_series_with_an_empty_day_and_a_late_sale() -> None:
    rate = DemandRate(alpha=0.5)
    rate.observe(10, 4)
    rate.observe(10, 2)  # day 10: 6
    rate.observe(12, 3)  # closes day 10 (6) and the empty day 11 (0)
    # day 10: the first day sets mu = 6, var = 0
    # day 11: diff = -6, incr = -3 -> mu = 3, var = 0.5 * (0 + 18) = 9
    assert rate.closed_days == 2
    assert rate.mu == pytest.approx(3.0)
    assert rate.sigma == pytest.approx(3.0)
    rate.observe(11, 1)  # late: counts into the open day 12, which now holds 4
    assert rate.closed_days == 2
    rate.observe(13, 2)  # closes day 12 with 4
    # diff = 1, incr = 0.5 -> mu = 3.5, var = 0.5 * (9 + 0.5) = 4.75
    assert rate.closed_days == 3
    assert rate.mu == pytest.approx(3.5)
    assert rate.sigma == pytest.approx(math.sqrt(4.75))
    assert (rate.open_day, rate.open_units) == (13, 2)


def test_roll_closes_days_without_adding_sales() -> None:
    rate = DemandRate(alpha=0.5)
    rate.observe(10, 6)
    rate.observe(11, 0)
    rate.observe(12, 4)  # mu = 3, var = 9 as above, day 12 open with 4
    rate.roll(12)  # the open day itself is not closed
    assert rate.closed_days == 2
    rate.roll(14)  # closes day 12 (4) and day 13 (0)
    # day 12: diff = 1, incr = 0.5 -> mu = 3.5, var = 4.75
    # day 13: diff = -3.5, incr = -1.75 -> mu = 1.75, var = 0.5 * (4.75 + 6.125) = 5.4375
    assert rate.closed_days == 4
    assert rate.mu == pytest.approx(1.75)
    assert rate.sigma == pytest.approx(math.sqrt(5.4375))
    rate.observe(14, 5)  # day 14 is open with nothing in it yet
    assert (rate.closed_days, rate.open_units) == (4, 5)


def test_roll_before_any_sale_does_nothing() -> None:
    rate = DemandRate()
    rate.roll(100)
    assert (rate.mu, rate.closed_days, rate.open_day) == (None, 0, None)


def test_long_silence_closes_at_most_a_year_of_empty_days() -> None:
    rate = DemandRate(alpha=0.2)
    rate.observe(0, 10)
    rate.observe(5000, 1)
    assert rate.closed_days == 1 + MAX_GAP_DAYS == 367
    assert rate.mu == pytest.approx(10 * 0.8**366)
    assert rate.open_day == 5000


def test_steady_demand_has_no_spread() -> None:
    rate = DemandRate(alpha=0.3)
    for day in range(30):
        rate.observe(day, 5)
    assert rate.mu == pytest.approx(5.0)
    assert rate.sigma == pytest.approx(0.0)
    assert rate.closed_days == 29


@pytest.mark.parametrize("alpha", [0.0, -0.1, 1.5])
def test_alpha_outside_zero_one_is_refused(alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha"):
        DemandRate(alpha=alpha)


# --- formulas ------------------------------------------------------------------------------


def test_derived_reorder_point_is_lead_time_demand_plus_safety_stock() -> None:
    # mu = 2/day over L = 4 days: 8, plus z * sigma * sqrt(L) = 1.5 * 3 * 2 = 9
    assert derived_reorder_point(2.0, 3.0, 4, 1.5) == pytest.approx(17.0)
    assert derived_reorder_point(5.0, 0.0, 7, 1.6449) == pytest.approx(35.0)
    z = z_for_service_level(0.95)
    assert derived_reorder_point(10.0, 4.0, 9, z) == pytest.approx(90 + z * 12)


def test_order_up_to_prefers_max_level_then_cover_days_then_twice_s() -> None:
    assert order_up_to(20.0, 100, 3.0, 14) == 100
    assert order_up_to(20.0, None, 3.0, 14) == pytest.approx(62.0)
    assert order_up_to(20.0, None, None, 14) == pytest.approx(40.0)
    assert order_up_to(20.0, 0, 3.0, 14) == 0  # a configured 0 is a value, not "unset"


def test_reorder_quantity_rounds_up_and_is_never_negative() -> None:
    assert reorder_quantity(100, 7) == 93
    assert reorder_quantity(62.2, 3) == 60
    assert reorder_quantity(10, 10) == 0
    assert reorder_quantity(10, 25) == 0
    assert reorder_quantity(10, -4) == 14  # oversold stock is made good too
    assert isinstance(reorder_quantity(62.2, 3), int)


def test_float_noise_is_not_an_extra_unit() -> None:
    top = order_up_to(1.1, None, 1.3, 13)  # 1.1 + 13 * 1.3 = 18, as 18.000000000000004
    assert top > 18
    assert reorder_quantity(top, 5) == 13
