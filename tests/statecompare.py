"""Whole-run comparisons for the end-to-end tests: a simulated stream, every Redis
key of a run, and every trigger it emitted.

Two runs of the engine over the same input are compared value for value, less
what differs between runs by design (writer ids, claim tokens, the model's save
time, how the workers agreed on batches, and each worker's own bookkeeping).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import redis
from engine_harness import Engine, make_settings

from common.settings import TRIGGER_TOPIC_NAMES
from omnipulse.simulator import Simulator, to_json_bytes

# The configuration of the runs compared: ordered input, no wall-clock advance.
ORDERED_CONFIG = """
[engine]
idle_advance = false
ordered_input = true
"""
START_MS = 1_700_000_000_000  # 2023-11-14: far enough back for 200 simulated days
SIM_DAYS = 200


def ordered_env(folder: Path) -> dict[str, str]:
    """The environment that points `omnipulse` at ORDERED_CONFIG, written in `folder`."""
    config = folder / "omnipulse.toml"
    config.write_text(ORDERED_CONFIG)
    return {"OMNIPULSE_CONFIG": str(config)}


def ordered_engine(broker: Any, redis_server: Any, topic_prefix: str, key_prefix: str) -> Engine:
    """An engine with ordered input on its own topics and keys (ORDERED_CONFIG's settings)."""
    return Engine(
        make_settings(
            broker,
            redis_server,
            topic_prefix,
            key_prefix,
            engine={"idle_advance": False, "ordered_input": True},
        )
    )


def stream(n: int, seed: int) -> dict[str, list[tuple[bytes | None, bytes]]]:
    """`n` simulated events over 200 days (and the stores), as records per topic."""
    sim = Simulator(
        seed=seed,
        customers=1500,
        skus=120,
        stores=8,
        start_ms=START_MS,
        time_scale=SIM_DAYS * 86_400 / n,
    )
    by_topic: dict[str, list[tuple[bytes | None, bytes]]] = defaultdict(list)
    events = sim.events()
    for rec in [*sim.reference_data(), *(next(events) for _ in range(n))]:
        key = rec.key.encode() if rec.key else None
        by_topic[rec.topic].append((key, to_json_bytes(rec.value)))
    return by_topic


def family(key: str) -> str:
    key = re.sub(r"\{([cat]):[^}]*\}", r"{\1:*}", key)
    return re.sub(r":(e|t|a|s|m|cap):.*$", r":\1:*", key)


def dump(url: str, prefix: str) -> dict[str, Any]:
    """Every key under `prefix` (named without it) and its value."""
    out: dict[str, Any] = {}
    with redis.Redis.from_url(url) as client:
        for raw in client.scan_iter(match=f"{prefix}:*", count=1000):
            kind = client.type(raw).decode()
            if kind == "string":
                value: Any = client.get(raw)
            elif kind == "hash":
                value = client.hgetall(raw)
            elif kind == "zset":
                value = client.zrange(raw, 0, -1, withscores=True)
            elif kind == "set":
                value = sorted(client.smembers(raw))
            else:
                value = client.lrange(raw, 0, -1)
            out[raw.decode()[len(prefix) :]] = value
    return out


def comparable(state: dict[str, Any]) -> dict[str, Any]:
    """The dump without what differs from run to run by design."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        if key == ":outbox:acked":
            continue  # writer -> offsets: writers are named per process
        if key.startswith((":{bsp}:", ":offsets:w")):
            continue  # batch plans, barriers, other workers' resume points
        if key in (":offsets", ":clock"):
            # the cluster's shape, and the batch each worker last swept
            per_shape = (b"@workers", b"@shape", b"swept")
            value = {f: v for f, v in value.items() if not f.startswith(per_shape)}
        if family(key) == ":{t:*}":
            value = "claimed"  # the value is the token of the settlement that claimed it
        elif key == ":{model}:churn":
            header = orjson.loads(value[b"header"])
            del header["saved_at"]  # wall clock
            value = {**value, b"header": header}
        elif key == ":{model}:learned":
            value = sorted(member for member, _ in value)  # scored by the wall clock
        out[key] = value
    return out


def triggers(engine: Engine) -> list[dict[str, Any]]:
    return [t for topic in TRIGGER_TOPIC_NAMES for t in engine.triggers(topic)]


def trigger_ids(engine: Engine) -> tuple[Counter[str], Counter[str]]:
    """(trigger id -> times emitted, kind -> records) over every trigger topic."""
    ids: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for topic in TRIGGER_TOPIC_NAMES:
        for t in engine.triggers(topic):
            ids[t["trigger_id"]] += 1
            kinds[t["kind"]] += 1
    return ids, kinds
