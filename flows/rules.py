"""The business rules of one engine, built once from settings for the pure operators."""

from __future__ import annotations

from dataclasses import dataclass, fields
from decimal import Decimal
from zoneinfo import ZoneInfo

from common.settings import Settings
from operators.cart import CartRules
from operators.customer import SegmentRules, TierRules
from operators.inventory import z_for_service_level
from operators.policy import QuietHours


def _ms(td: object) -> int:
    return int(td.total_seconds() * 1000)  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class ChurnRules:
    horizon_ms: int
    threshold: float
    interval_increase: float
    activity_drop: float
    window_days: int


@dataclass(frozen=True, slots=True)
class Rules:
    segments: SegmentRules
    tiers: TierRules
    cart: CartRules
    journey_steps: dict[str, int]  # step name -> delay after the first order, ms
    holdout_share: float
    trigger_ttl_s: int
    tz: ZoneInfo | None
    quiet: QuietHours | None
    max_price_deviation_pct: Decimal
    ship_kinds: tuple[str, ...]  # location kinds that ship delivery orders
    default_safety_stock: int
    service_level: float
    z: float
    churn: ChurnRules

    @classmethod
    def from_settings(cls, s: Settings) -> Rules:
        tz = None if s.engine.timezone == "UTC" else ZoneInfo(s.engine.timezone)
        window = s.policy.quiet_window()
        ac = s.abandoned_cart
        return cls(
            # SegmentRules mirrors [segments] field for field.
            segments=SegmentRules(
                **{
                    f.name: getattr(s.segments, f.name)
                    for f in fields(SegmentRules)
                    if f.name != "offers"
                },
                offers=dict(s.segments.offers),
            ),
            tiers=s.tiers.rules(),
            cart=CartRules(
                abandoned_after_ms=_ms(ac.abandoned_after),
                discount_pct=ac.discount_pct,
                core_discount_pct=ac.core_discount_pct,
                low_stock_hint=ac.low_stock_hint,
                cooldown_ms=_ms(ac.cooldown),
            ),
            journey_steps={name: _ms(d) for name, d in s.journey.steps.items()},
            holdout_share=s.policy.holdout_share,
            trigger_ttl_s=max(int(s.engine.dedup_ttl.total_seconds()), 86_400),
            tz=tz,
            quiet=None if window is None else QuietHours(window[0], window[1], tz),
            max_price_deviation_pct=s.price.max_deviation_pct,
            ship_kinds=("warehouse", "store") if s.allocation.ship_from_stores else ("warehouse",),
            default_safety_stock=s.reorder.safety_stock,
            service_level=s.reorder.service_level,
            z=z_for_service_level(s.reorder.service_level),
            churn=ChurnRules(
                horizon_ms=_ms(s.churn.horizon),
                threshold=s.churn.threshold,
                interval_increase=s.churn.interval_increase,
                activity_drop=s.churn.activity_drop,
                window_days=max(1, int(s.churn.activity_window.total_seconds() // 86_400)),
            ),
        )
