"""The event-time watermark (SPEC §6): monotone, lateness, late events, merge, idle advance."""

from __future__ import annotations

from operators.clock import DAY_MS, HOUR_MS, Watermark

T = 1_795_342_500_000  # an event time
WALL = 1_795_342_600_000  # a wall-clock time
LATE = 5 * 60_000  # allowed lateness: 5 minutes


def test_fresh_watermark_is_at_zero() -> None:
    assert Watermark(LATE).now == 0


def test_now_is_max_event_time_minus_lateness() -> None:
    clock = Watermark(LATE)
    clock.observe(T, WALL)
    assert clock.now == T - LATE
    clock.observe(T + HOUR_MS, WALL + 1)
    assert clock.now == T + HOUR_MS - LATE
    assert clock.max_event_ms == T + HOUR_MS


def test_now_never_goes_negative() -> None:
    clock = Watermark(LATE)
    clock.observe(1000, WALL)
    assert clock.now == 0


def test_never_goes_backwards() -> None:
    clock = Watermark(LATE)
    seen = []
    for ts in (T, T + 10_000, T - HOUR_MS, T + 5_000, T + 10_000, T + 20_000, T):
        clock.observe(ts, WALL)
        seen.append(clock.now)
    assert seen == sorted(seen)
    assert clock.now == T + 20_000 - LATE


def test_late_detection() -> None:
    clock = Watermark(LATE)
    assert clock.observe(T, WALL) is False
    # Behind the newest event but within the lateness: on time.
    assert clock.observe(T - LATE + 1, WALL) is False
    assert clock.observe(T - LATE, WALL) is False  # exactly at the watermark
    assert clock.observe(T - LATE - 1, WALL) is True
    assert clock.observe(T - 3 * HOUR_MS, WALL) is True
    # A late event does not move the clock.
    assert clock.now == T - LATE


def test_event_is_judged_against_the_watermark_before_it() -> None:
    clock = Watermark(LATE)
    clock.observe(T, WALL)
    # This event moves the watermark far ahead but is not late itself.
    assert clock.observe(T + HOUR_MS, WALL) is False
    assert clock.observe(T, WALL) is True


def test_zero_lateness() -> None:
    clock = Watermark(0)
    clock.observe(T, WALL)
    assert clock.now == T
    assert clock.observe(T, WALL) is False
    assert clock.observe(T - 1, WALL) is True


def test_merge_takes_a_maximum_that_is_ahead() -> None:
    clock = Watermark(LATE)
    clock.observe(T, WALL)
    clock.merge(T + HOUR_MS, WALL + 1)
    assert clock.now == T + HOUR_MS - LATE
    clock.merge(T, WALL + 2)  # behind: ignored
    assert clock.now == T + HOUR_MS - LATE


def test_restart_resumes_from_the_durable_maximum() -> None:
    clock = Watermark(LATE)
    clock.merge(T, WALL)
    assert clock.now == T - LATE
    assert clock.observe(T - HOUR_MS, WALL) is True


def test_a_restart_ends_where_an_uninterrupted_run_would() -> None:
    # before the crash the run read an event at T + 1 day on one topic while
    # another topic held the clock at T; the restart re-reads only the latter
    clock = Watermark(LATE, highest_before_ms=T + DAY_MS)
    clock.merge(T, WALL)
    clock.settle(WALL)
    assert clock.now == T - LATE  # nothing known to be done yet: no jump
    clock.opened("orders#0")
    clock.observe(T + HOUR_MS, WALL, "orders#0")
    assert clock.now == T + HOUR_MS - LATE  # the partition still reading holds it
    clock.caught_up("orders#0", WALL)
    assert clock.now == T + DAY_MS - LATE


def test_idle_advance_moves_with_wall_time() -> None:
    clock = Watermark(LATE)
    clock.observe(T, WALL)
    clock.caught_up("", WALL)  # wall time moves the clock only once input is caught up
    clock.advance_idle(WALL + 999, idle_after_ms=1000)  # not idle long enough
    assert clock.max_event_ms == T
    clock.advance_idle(WALL + 1000, idle_after_ms=1000)
    assert clock.max_event_ms == T + 1000
    clock.advance_idle(WALL + 1500, idle_after_ms=1000)  # 500 ms since the last move
    assert clock.max_event_ms == T + 1000
    clock.advance_idle(WALL + 3 * HOUR_MS, idle_after_ms=1000)
    assert clock.max_event_ms == T + 3 * HOUR_MS
    assert clock.now == T + 3 * HOUR_MS - LATE


def test_events_keep_the_clock_from_idling() -> None:
    clock = Watermark(LATE)
    for i in range(10):
        clock.observe(T + i * 500, WALL + i * 500)
        clock.advance_idle(WALL + i * 500 + 400, idle_after_ms=1000)
    assert clock.max_event_ms == T + 9 * 500


def test_idle_advance_needs_a_first_event() -> None:
    clock = Watermark(LATE)
    clock.advance_idle(WALL, idle_after_ms=1000)
    assert clock.max_event_ms == 0
    assert clock.now == 0


def test_merge_resets_the_idle_timer() -> None:
    clock = Watermark(LATE)
    clock.merge(T, WALL)
    clock.advance_idle(WALL + 500, idle_after_ms=1000)
    assert clock.max_event_ms == T
    clock.advance_idle(WALL + 1000, idle_after_ms=1000)
    assert clock.max_event_ms == T + 1000


def test_idle_advance_never_goes_backwards_after_real_events() -> None:
    clock = Watermark(LATE)
    clock.observe(T, WALL)
    clock.caught_up("", WALL)
    clock.advance_idle(WALL + HOUR_MS, idle_after_ms=1000)
    ahead = clock.now
    # A delayed event from before the idle advance: late, and the clock holds.
    assert clock.observe(T + 1000, WALL + HOUR_MS + 1) is True
    assert clock.now == ahead


def test_a_partition_read_ahead_does_not_move_the_clock_for_the_others() -> None:
    clock = Watermark(LATE)
    clock.opened("clicks#0")
    clock.opened("orders#0")
    clock.observe(T + 2 * HOUR_MS, WALL, "clicks#0")
    assert clock.now == 0  # orders#0 has delivered nothing yet
    clock.observe(T, WALL, "orders#0")
    assert clock.now == T - LATE
    # an order 30 min after T is not late although clicks are 2 h ahead
    assert clock.observe(T + 30 * 60_000, WALL, "orders#0") is False
    assert clock.now == T + 30 * 60_000 - LATE


def test_a_caught_up_partition_stops_holding_the_clock_back() -> None:
    clock = Watermark(LATE)
    clock.observe(T + 2 * HOUR_MS, WALL, "clicks#0")
    clock.observe(T, WALL, "orders#0")
    clock.caught_up("orders#0", WALL)
    assert clock.now == T + 2 * HOUR_MS - LATE
    clock.caught_up("clicks#0", WALL)
    assert clock.now == T + 2 * HOUR_MS - LATE
    # new data on a caught-up partition: it holds the clock again, which stays put
    clock.observe(T + HOUR_MS, WALL, "orders#0")
    assert clock.now == T + 2 * HOUR_MS - LATE


def test_idle_advance_waits_while_a_partition_still_delivers() -> None:
    clock = Watermark(LATE)
    clock.observe(T, WALL, "clicks#0")
    clock.advance_idle(WALL + HOUR_MS, idle_after_ms=1000)
    assert clock.max_event_ms == T
    clock.caught_up("clicks#0", WALL + HOUR_MS)
    clock.advance_idle(WALL + 2 * HOUR_MS, idle_after_ms=1000)
    assert clock.max_event_ms == T + HOUR_MS


def test_a_caught_up_partition_holds_the_clock_for_its_grace_in_live_mode() -> None:
    clock = Watermark(LATE, idle_grace_ms=500)
    clock.observe(T, WALL, "orders#0")
    clock.caught_up("orders#0", WALL)
    # another topic races ahead right after: the orders partition still holds
    clock.observe(T + 2 * HOUR_MS, WALL + 100, "clicks#0")
    assert clock.now == T - LATE
    # the order produced first arrives a moment later: not late
    assert clock.observe(T + 30 * 60_000, WALL + 200, "orders#0") is False
    clock.caught_up("orders#0", WALL + 250)
    clock.caught_up("clicks#0", WALL + 300)
    clock.settle(WALL + 700)
    assert clock.now == T + 30 * 60_000 - LATE  # orders#0's grace has not run out yet
    clock.settle(WALL + 800)
    assert clock.now == T + 2 * HOUR_MS - LATE
