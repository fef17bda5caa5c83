"""The online churn model, its snapshot and its label queue in Redis (SPEC §5.8).

`ChurnModel` wraps a river pipeline (standard scaling, then logistic
regression) with progressive validation: every label is first used to score
the prediction the model makes *now* for that feature vector (ROC AUC, log
loss), then learned. The heuristic's score for the same vector can be passed
along, so both AUCs are measured on exactly the same labels.

One learner, many scorers. Workers (threads and processes alike) do not
learn: they queue each label they decide, with a deterministic id (customer
and the time of the score it labels). One learner at a time (the process
holding a short lease) learns the queue in order and commits, in one atomic
call, the new snapshot, the queue entries it consumed and the ids it learned
(remembered for the event-dedup TTL, so a label queued twice by a batch read
again after a crash is learned once). Every process scores with its copy of
the model and reloads it when the snapshot's version moves on.

Keys (one hash tag, so one slot on Redis Cluster too):

    <prefix>:{model}:churn     hash    header (JSON: format, version, river
                                       version, label counts, saved_at, sha256)
                                       and blob (the pickled ChurnModel)
    <prefix>:{model}:labels    list    queued labels, JSON {id, x, y, b}
    <prefix>:{model}:learned   zset    label id -> wall ms it was learned
    <prefix>:{model}:learner   string  the learner's lease (process token)

The blob is a pickle: only load snapshots from a Redis that the engine alone
writes to.
"""

from __future__ import annotations

import hashlib
import logging
import math
import pickle
import threading
import time
import uuid
from collections.abc import Mapping
from importlib import resources
from typing import Any

import orjson
import redis
import river
from river import linear_model, metrics, optim, preprocessing

from state.errors import call

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
LEASE_MS = 10_000  # a learner that stops renewing hands over after this
# Queued labels learned per commit. Each drain is learned in the order the labels
# became known, so it should hold a whole batch's labels (a catch-up batch of a
# busy month can decide tens of thousands).
DRAIN_LIMIT = 100_000


class ChurnModel:
    """A river pipeline plus its progressive metrics and label counts."""

    def __init__(self, learning_rate: float = 0.05, l2: float = 0.0, auc_thresholds: int = 100):
        self.pipeline = preprocessing.StandardScaler() | linear_model.LogisticRegression(
            optimizer=optim.SGD(learning_rate), l2=l2
        )
        self.learning_rate = learning_rate
        self.l2 = l2
        self.auc = metrics.ROCAUC(n_thresholds=auc_thresholds)
        self.log_loss = metrics.LogLoss()
        self.baseline_auc = metrics.ROCAUC(n_thresholds=auc_thresholds)
        self.labels = {0: 0, 1: 0}
        self.baseline_labels = 0

    # -- scoring and learning ------------------------------------------------------

    def predict_one(self, x: Mapping[str, float]) -> float:
        """Churn probability in [0, 1]; 0.5 (no opinion) before the first label."""
        p = self.pipeline.predict_proba_one(dict(x)).get(True, 0.0)
        return min(1.0, max(0.0, float(p)))

    def learn_one(self, x: Mapping[str, float], y: int, baseline: float | None = None) -> float:
        """Score `x` as things stand, update the metrics with it, then learn (x, y).

        `baseline` is the heuristic's score of the same vector; when given, its
        AUC is kept on the same labels. Returns the prediction made before learning.
        """
        label = bool(y)
        x = dict(x)
        p = self.predict_one(x)
        self.auc.update(label, p)
        self.log_loss.update(label, p)
        if baseline is not None:
            self.baseline_auc.update(label, baseline)
            self.baseline_labels += 1
        self.labels[int(label)] += 1
        self.pipeline.learn_one(x, label)
        return p

    def top_features(self, x: Mapping[str, float], k: int = 3) -> list[tuple[str, float]]:
        """The k features that pushed this score up the most: (name, weight x scaled value)."""
        scaled = self.pipeline["StandardScaler"].transform_one(dict(x))
        weights = self.pipeline["LogisticRegression"].weights
        parts = [(name, float(weights.get(name, 0.0) * v)) for name, v in scaled.items()]
        parts.sort(key=lambda nv: nv[1], reverse=True)
        return [(n, round(v, 4)) for n, v in parts[:k]]

    # -- reporting -----------------------------------------------------------------

    @property
    def n_labels(self) -> int:
        return self.labels[0] + self.labels[1]

    def metrics(self) -> dict[str, Any]:
        """Live progressive metrics: AUC and log loss (None before any label), label counts."""
        seen = self.n_labels > 0
        both = self.labels[0] > 0 and self.labels[1] > 0
        return {
            "labels": self.n_labels,
            "labels_churned": self.labels[1],
            "labels_retained": self.labels[0],
            "roc_auc": _num(self.auc.get()) if both else None,
            "log_loss": _num(self.log_loss.get()) if seen else None,
            "heuristic_roc_auc": _num(self.baseline_auc.get())
            if both and self.baseline_labels
            else None,
            "heuristic_labels": self.baseline_labels,
        }

    def describe(self) -> str:
        """What the model is, in a few lines (for the `omnipulse model` CLI)."""
        m = self.metrics()
        lr = self.pipeline["LogisticRegression"]
        weights = sorted(lr.weights.items(), key=lambda kv: abs(kv[1]), reverse=True)
        top = ", ".join(f"{k}={v:+.3f}" for k, v in weights[:5]) or "none yet"

        def fmt(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.4f}"

        return "\n".join(
            [
                "churn model: StandardScaler | LogisticRegression"
                f" (SGD lr={self.learning_rate}, l2={self.l2}), river {river.__version__}",
                f"labels: {m['labels']} (churned {m['labels_churned']},"
                f" retained {m['labels_retained']})",
                f"progressive ROC AUC: {fmt(m['roc_auc'])}, log loss: {fmt(m['log_loss'])},"
                f" heuristic ROC AUC: {fmt(m['heuristic_roc_auc'])}",
                f"largest weights: {top}",
            ]
        )


def _num(v: float) -> float | None:
    return None if math.isnan(v) or math.isinf(v) else round(float(v), 6)


class ModelStore:
    """Snapshot, label queue and lease of the churn model. Redis failures raise StateError."""

    def __init__(self, client: redis.Redis, keys_prefix: str) -> None:
        self.client = client
        self.key = f"{keys_prefix}:{{model}}:churn"
        self.labels_key = f"{keys_prefix}:{{model}}:labels"
        self.learned_key = f"{keys_prefix}:{{model}}:learned"
        self.lease_key = f"{keys_prefix}:{{model}}:learner"
        self._commit = client.register_script(
            resources.files("state").joinpath("lua", "commit_model.lua").read_text()
        )

    # -- snapshots ------------------------------------------------------------------

    def save(self, model: ChurnModel, now_ms: int | None = None) -> dict[str, Any]:
        """Snapshot the model outside the learner (tools, tests); returns the header."""
        header, blob = self.snapshot(model, (self.version() or 0) + 1, now_ms)
        call(
            lambda: self.client.hset(
                self.key, mapping={"header": orjson.dumps(header), "blob": blob}
            ),
            f"save churn model to {self.key}",
        )
        return header

    def snapshot(
        self, model: ChurnModel, version: int, now_ms: int | None = None
    ) -> tuple[dict[str, Any], bytes]:
        """The header and blob of a snapshot of `model` as `version`."""
        blob = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
        header = {
            "format": FORMAT_VERSION,
            "version": version,
            "river": river.__version__,
            "labels": model.n_labels,
            "labels_churned": model.labels[1],
            "labels_retained": model.labels[0],
            "saved_at": int(time.time() * 1000) if now_ms is None else now_ms,
            "sha256": hashlib.sha256(blob).hexdigest(),
            "bytes": len(blob),
        }
        return header, blob

    def header(self) -> dict[str, Any] | None:
        """The header of the stored snapshot, or None (missing or unreadable)."""
        raw = call(lambda: self.client.hget(self.key, "header"), f"read {self.key}")
        if raw is None:
            return None
        try:
            head = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        return head if isinstance(head, dict) else None

    def version(self) -> int | None:
        """The stored snapshot's version; None without a readable header."""
        head = self.header()
        v = head.get("version") if head else None
        return v if isinstance(v, int) else (0 if head else None)

    def load(self, **fresh: Any) -> ChurnModel:
        """The stored model; a fresh one (with a warning) if missing, corrupt or incompatible.

        `fresh` are the ChurnModel arguments for a model built from scratch.
        """
        return self.load_versioned(**fresh)[0]

    def load_versioned(self, **fresh: Any) -> tuple[ChurnModel, int]:
        """`load`, with the version of the snapshot read (0 when there is none)."""
        header_raw, blob = call(
            lambda: self.client.hmget(self.key, ["header", "blob"]), f"load {self.key}"
        )
        if header_raw is None and blob is None:
            log.warning("churn model: no snapshot at %s; starting a fresh model", self.key)
            return ChurnModel(**fresh), 0
        version = _version_of(header_raw)
        try:
            model = self._decode(header_raw, blob)
        except _Unusable as ex:
            log.warning(
                "churn model: snapshot at %s is unusable (%s); starting a fresh model",
                self.key,
                ex,
            )
            return ChurnModel(**fresh), version
        return model, version

    def _decode(self, header_raw: bytes | None, blob: bytes | None) -> ChurnModel:
        if header_raw is None or blob is None:
            raise _Unusable("header or blob missing")
        try:
            head = orjson.loads(header_raw)
        except orjson.JSONDecodeError as ex:
            raise _Unusable(f"header is not JSON: {ex}") from ex
        if not isinstance(head, dict):
            raise _Unusable("header is not a JSON object")
        if head.get("format") != FORMAT_VERSION:
            raise _Unusable(
                f"snapshot format {head.get('format')!r}, this engine reads {FORMAT_VERSION}"
            )
        if head.get("sha256") != hashlib.sha256(blob).hexdigest():
            raise _Unusable("checksum mismatch (blob corrupt or truncated)")
        if head.get("river") != river.__version__:
            log.warning(
                "churn model: snapshot at %s was saved with river %s, running %s; trying it",
                self.key,
                head.get("river"),
                river.__version__,
            )
        try:
            model = pickle.loads(blob)
        except Exception as ex:  # an unpickling failure can be almost any exception
            raise _Unusable(f"cannot unpickle: {type(ex).__name__}: {ex}") from ex
        if not isinstance(model, ChurnModel):
            raise _Unusable(f"blob holds a {type(model).__name__}, not a ChurnModel")
        return model

    # -- the label queue ------------------------------------------------------------

    def queue_label(
        self,
        pipe: Any,
        label_id: str,
        x: Mapping[str, float],
        y: int,
        baseline: float | None,
        known_at: int = 0,
    ) -> None:
        """Queue a decided label on a caller's pipeline, for the learner.

        `known_at` is the event time the label became known; the learner learns
        what it drains at once in that order."""
        record = {"id": label_id, "x": x, "y": y, "b": baseline, "at": known_at}
        pipe.rpush(self.labels_key, orjson.dumps(record))

    def queued(self) -> int:
        """Labels waiting for the learner."""
        return int(call(lambda: self.client.llen(self.labels_key), f"read {self.labels_key}"))

    def pending_labels(self, limit: int) -> list[bytes]:
        """The oldest `limit` queued labels, raw."""
        return call(
            lambda: self.client.lrange(self.labels_key, 0, limit - 1), f"read {self.labels_key}"
        )

    def already_learned(self, ids: list[str]) -> set[str]:
        """Those of `ids` that a committed snapshot has learned (within the memory window)."""
        if not ids:
            return set()
        scores = call(
            lambda: self.client.zmscore(self.learned_key, ids), f"read {self.learned_key}"
        )
        return {i for i, sc in zip(ids, scores, strict=True) if sc is not None}

    def commit(
        self,
        header: dict[str, Any],
        blob: bytes,
        from_version: int,
        consumed: int,
        learned_ids: list[str],
        remember_ms: int,
    ) -> bool:
        """Write snapshot, queue head and learned ids at once; False if another learner won."""
        args = [from_version, orjson.dumps(header), blob, consumed, int(time.time() * 1000)]
        return bool(
            call(
                lambda: self._commit(
                    keys=[self.key, self.labels_key, self.learned_key],
                    args=[*args, remember_ms, *learned_ids],
                ),
                f"commit churn model to {self.key}",
            )
        )

    def hold_lease(self, token: str, ttl_ms: int = LEASE_MS) -> bool:
        """Take or renew the learner's lease; True while `token` holds it."""

        def take() -> bool:
            if self.client.set(self.lease_key, token, nx=True, px=ttl_ms):
                return True
            if self.client.get(self.lease_key) == token.encode():
                self.client.pexpire(self.lease_key, ttl_ms)
                return True
            return False

        return bool(call(take, f"lease {self.lease_key}"))


def _version_of(header_raw: bytes | None) -> int:
    try:
        head = orjson.loads(header_raw) if header_raw is not None else None
    except orjson.JSONDecodeError:
        return 0
    v = head.get("version") if isinstance(head, dict) else None
    return v if isinstance(v, int) else 0


class _Unusable(Exception):
    """A snapshot that cannot be restored (never leaves this module)."""


class SharedChurnModel:
    """One process's copy of the churn model, shared by its worker threads.

    Threads score with it. `sync` reloads it when another process has
    committed a newer snapshot and, in the process holding the learner's
    lease, learns the queued labels and commits them. A lock keeps a learn, a
    score and a pickle from overlapping; a second one lets a single thread of
    the process drain the queue at a time.
    """

    def __init__(self, model: ChurnModel, version: int = 0) -> None:
        self.model = model
        self.version = version
        self.token = uuid.uuid4().hex  # this process's claim on the learner's lease
        self._lock = threading.Lock()
        self._draining = threading.Lock()

    def predict_one(self, x: Mapping[str, float]) -> float:
        with self._lock:
            return self.model.predict_one(x)

    def top_features(self, x: Mapping[str, float], k: int = 3) -> list[tuple[str, float]]:
        with self._lock:
            return self.model.top_features(x, k)

    def metrics(self) -> dict[str, Any]:
        with self._lock:
            return self.model.metrics()

    def sync(
        self,
        store: ModelStore,
        *,
        remember_ms: int,
        force: bool = False,
        limit: int = DRAIN_LIMIT,
    ) -> int:
        """Reload a newer snapshot; learn and commit the queued labels if this process
        is the learner (`force`: whatever the lease says). Returns the labels learned."""
        if not self._draining.acquire(blocking=False):
            return 0  # another thread of this process is at it
        try:
            if (store.version() or 0) != self.version:
                self._reload(store)
            if not force and not store.hold_lease(self.token):
                return 0
            total = 0
            while True:
                raw = store.pending_labels(limit)
                if not raw:
                    return total
                learned = self._learn(store, raw, remember_ms)
                if learned is None:
                    self._reload(store)  # another learner committed first: take its model
                    return total
                total += learned
                if len(raw) < limit:
                    return total
        finally:
            self._draining.release()

    def refresh(self, store: ModelStore) -> None:
        """Reload the learner's snapshot if it is newer; never learns (not the learner)."""
        if (store.version() or 0) != self.version:
            self._reload(store)

    def _learn(self, store: ModelStore, raw: list[bytes], remember_ms: int) -> int | None:
        items = []
        for r in raw:
            try:
                it = orjson.loads(r)
                at = int(it.get("at") or 0)
                items.append((at, str(it["id"]), dict(it["x"]), int(it["y"]), it.get("b")))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                log.warning("churn model: dropping an unreadable queued label")
        # in the order the labels became known, not the order workers queued
        # them: progressive validation must never learn a later label first
        items.sort(key=lambda it: (it[0], it[1]))
        seen = store.already_learned(list(dict.fromkeys(i for _, i, *_ in items)))
        fresh: list[str] = []
        with self._lock:
            for _, label_id, x, y, base in items:
                if label_id in seen:
                    continue  # queued again by a batch read twice: learned once
                seen.add(label_id)
                self.model.learn_one(x, y, baseline=base)
                fresh.append(label_id)
            header, blob = store.snapshot(self.model, self.version + 1)
        if not store.commit(header, blob, self.version, len(raw), fresh, remember_ms):
            return None
        self.version += 1
        return len(fresh)

    def _reload(self, store: ModelStore) -> None:
        model, version = store.load_versioned()
        with self._lock:
            self.model, self.version = model, version
