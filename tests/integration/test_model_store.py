"""The churn model's snapshot in the real redis-server: restore, corruption, failures."""

from __future__ import annotations

import logging
import pickle
import random

import orjson
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from state.errors import StateError
from state.model import FORMAT_VERSION, ChurnModel, ModelStore, SharedChurnModel

pytestmark = pytest.mark.integration


def synthetic(rng: random.Random) -> tuple[dict[str, float], int]:
    """A small feature vector whose label follows one feature, with noise."""
    x = {"gap_ratio": rng.uniform(0, 3), "interactions_last_30": float(rng.randint(0, 20))}
    return x, int(x["gap_ratio"] + rng.gauss(0, 0.5) > 1.3)


def trained(n: int = 500, seed: int = 3) -> ChurnModel:
    rng = random.Random(seed)
    model = ChurnModel()
    for _ in range(n):
        x, y = synthetic(rng)
        model.learn_one(x, y, baseline=0.5)
    return model


def test_saved_model_restores_with_its_metrics_and_labels(
    redis_client: redis.Redis, key_prefix: str
) -> None:
    model = trained()
    store = ModelStore(redis_client, key_prefix)
    header = store.save(model, now_ms=1_780_000_000_000)
    assert store.key == f"{key_prefix}:{{model}}:churn"
    assert header["format"] == FORMAT_VERSION and header["labels"] == 500
    assert store.header() == header

    restored = ModelStore(redis_client, key_prefix).load()
    assert restored.metrics() == model.metrics()
    assert restored.labels == model.labels
    probe, _ = synthetic(random.Random(99))
    assert restored.predict_one(probe) == model.predict_one(probe)

    # it goes on learning from where it was: the label count does not restart
    x, y = synthetic(random.Random(100))
    restored.learn_one(x, y)
    assert restored.metrics()["labels"] == 501


def test_missing_snapshot_gives_a_fresh_model_and_a_warning(
    redis_client: redis.Redis, key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = ModelStore(redis_client, key_prefix)
    with caplog.at_level(logging.WARNING, logger="state.model"):
        model = store.load()
    assert model.metrics()["labels"] == 0
    assert f"no snapshot at {key_prefix}:{{model}}:churn" in caplog.text
    assert store.header() is None


@pytest.mark.parametrize(
    ("damage", "cause"),
    [
        ("blob", "checksum mismatch"),
        ("header", "header is not JSON"),
        ("format", "snapshot format 999"),
        ("no_blob", "header or blob missing"),
        ("not_a_model", "not a ChurnModel"),
        ("bad_pickle", "cannot unpickle"),
    ],
)
def test_unusable_snapshot_gives_a_fresh_model_and_a_warning(
    redis_client: redis.Redis,
    key_prefix: str,
    caplog: pytest.LogCaptureFixture,
    damage: str,
    cause: str,
) -> None:
    store = ModelStore(redis_client, key_prefix)
    header = store.save(trained(50))
    key = store.key
    if damage == "blob":
        blob = redis_client.hget(key, "blob")
        assert blob is not None
        redis_client.hset(key, "blob", blob[: len(blob) // 2])
    elif damage == "header":
        redis_client.hset(key, "header", b"{not json")
    elif damage == "format":
        redis_client.hset(key, "header", orjson.dumps({**header, "format": 999}))
    elif damage == "no_blob":
        redis_client.hdel(key, "blob")
    else:
        import hashlib

        blob = pickle.dumps({"a": 1}) if damage == "not_a_model" else b"\x80\x05garbage."
        head = {**header, "sha256": hashlib.sha256(blob).hexdigest()}
        redis_client.hset(key, mapping={"header": orjson.dumps(head), "blob": blob})

    with caplog.at_level(logging.WARNING, logger="state.model"):
        model = store.load()
    assert isinstance(model, ChurnModel) and model.metrics()["labels"] == 0
    assert key in caplog.text and cause in caplog.text and "fresh model" in caplog.text


def test_redis_failure_is_a_state_error(redis_client: redis.Redis, key_prefix: str) -> None:
    redis_client.set(f"{key_prefix}:{{model}}:churn", "a string, not a hash")
    store = ModelStore(redis_client, key_prefix)
    with pytest.raises(StateError, match=r"\{model\}:churn"):
        store.load()
    with pytest.raises(StateError, match=r"\{model\}:churn"):
        store.save(ChurnModel())

    nothing_listens = redis.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )
    with pytest.raises(StateError):
        ModelStore(nothing_listens, key_prefix).load()


def queue(store: ModelStore, redis_client: redis.Redis, labels: list[tuple[str, int]]) -> None:
    rng = random.Random(5)
    pipe = redis_client.pipeline(transaction=False)
    for label_id, y in labels:
        store.queue_label(pipe, label_id, synthetic(rng)[0], y, 0.5)
    pipe.execute()


def test_a_label_queued_twice_is_learned_once_also_by_a_later_learner(
    redis_client: redis.Redis, key_prefix: str
) -> None:
    store = ModelStore(redis_client, key_prefix)
    learner = SharedChurnModel(*store.load_versioned())
    # a batch read again after a crash queues its labels again
    queue(store, redis_client, [("a|1", 1), ("b|1", 0), ("a|1", 1)])
    assert learner.sync(store, remember_ms=60_000) == 2
    queue(store, redis_client, [("b|1", 0), ("c|1", 1)])
    # a restarted process: a new copy from the snapshot, a new lease holder once free
    redis_client.delete(store.lease_key)
    restarted = SharedChurnModel(*store.load_versioned())
    assert restarted.model.n_labels == 2
    assert restarted.sync(store, remember_ms=60_000) == 1
    assert store.load().n_labels == 3 and store.queued() == 0
    assert redis_client.zcard(store.learned_key) == 3


def test_only_the_lease_holder_learns_and_a_stale_learner_cannot_overwrite(
    redis_client: redis.Redis, key_prefix: str
) -> None:
    store = ModelStore(redis_client, key_prefix)
    first = SharedChurnModel(*store.load_versioned())
    second = SharedChurnModel(*store.load_versioned())
    queue(store, redis_client, [("a|1", 1), ("b|1", 0)])
    assert first.sync(store, remember_ms=60_000) == 2
    queue(store, redis_client, [("c|1", 1)])
    assert second.sync(store, remember_ms=60_000) == 0  # the lease is first's
    assert second.model.n_labels == 2  # ...but it reloaded first's snapshot to score with
    # a learner whose copy is behind the snapshot (it stalled past its lease)
    # has its commit refused, and takes the committed model instead
    stale = SharedChurnModel(ChurnModel(), version=0)
    assert stale.sync(store, remember_ms=60_000, force=True) == 1  # reloads, then learns c
    assert store.load().n_labels == 3
    stale.version = 0  # as if it had not seen the last commit
    queue(store, redis_client, [("d|1", 0)])
    assert stale._learn(store, store.pending_labels(10), 60_000) is None
    assert store.load().n_labels == 3 and store.queued() == 1
