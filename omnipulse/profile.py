"""`omnipulse profile ID`: one customer's state, as an analyst reads it."""

from __future__ import annotations

from typing import Any

import redis

from common.settings import Settings
from operators.customer import profile_view
from state.customers import CustomerStore, facts_from, labels_from


def read_profile(
    settings: Settings, redis_url: str, customer_id: str, *, raw: bool = True
) -> dict[str, Any] | None:
    """The customer's profile judged at the engine's current event time, or None.

    With pseudonymisation on, a `raw` id is hashed with the engine's key first
    (the profile then shows the pseudonym as `customer_id`); `raw=False` takes
    `customer_id` as a pseudonym already, as read from a trigger.
    """
    pseudonym = settings.privacy.pseudonymizer()
    if pseudonym is not None and raw:
        customer_id = pseudonym(customer_id)
    with redis.Redis.from_url(redis_url) as client:
        store = CustomerStore.for_settings(client, settings)
        found = store.read([customer_id]).get(customer_id)
        if found is None:
            return None
        clock = store.watermark(int(settings.engine.allowed_lateness.total_seconds() * 1000), 0)
        state, orders = found
        view = profile_view(
            customer_id,
            labels_from(state),
            facts_from(state, orders),
            clock.now,
            settings.tiers.rules(),
        )
        view["churn_score"] = state.get("cs")
        view["first_activity_ts"] = state.get("fa")
        view["last_activity_ts"] = state.get("la")
        return view
