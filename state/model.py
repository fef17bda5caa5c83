"""The online churn model and its snapshot in Redis (SPEC §5.8).

`ChurnModel` wraps a river pipeline (standard scaling, then logistic
regression) with progressive validation: every label is first used to score
the prediction the model makes *now* for that feature vector (ROC AUC, log
loss), then learned. The heuristic's score for the same vector can be passed
along, so both AUCs are measured on exactly the same labels.

`ModelStore` snapshots a model to one Redis hash, `<prefix>:model:churn`:

    header   JSON: format, river version, label counts, saved_at (ms), sha256 of blob
    blob     the pickled ChurnModel

Both fields are written by one HSET, so a reader never sees a header of one
snapshot with the blob of another. The blob is a pickle: only load snapshots
from a Redis that the engine alone writes to.
"""

from __future__ import annotations

import hashlib
import logging
import math
import pickle
import threading
import time
from collections.abc import Mapping
from typing import Any

import orjson
import redis
import river
from river import linear_model, metrics, optim, preprocessing

from state.errors import call

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


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
    """Save and restore a `ChurnModel` in Redis. Redis failures raise StateError."""

    def __init__(self, client: redis.Redis, keys_prefix: str) -> None:
        self.client = client
        self.key = f"{keys_prefix}:model:churn"

    def save(self, model: ChurnModel, now_ms: int | None = None) -> dict[str, Any]:
        """Snapshot the model; returns the header written."""
        header, blob = self._snapshot(model, now_ms)
        call(
            lambda: self.client.hset(
                self.key, mapping={"header": orjson.dumps(header), "blob": blob}
            ),
            f"save churn model to {self.key}",
        )
        return header

    def queue_save(self, pipe: Any, model: ChurnModel, now_ms: int | None = None) -> None:
        """Queue a snapshot on a caller's pipeline: written with the labels it learned."""
        header, blob = self._snapshot(model, now_ms)
        pipe.hset(self.key, mapping={"header": orjson.dumps(header), "blob": blob})

    def _snapshot(self, model: ChurnModel, now_ms: int | None) -> tuple[dict[str, Any], bytes]:
        blob = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
        header = {
            "format": FORMAT_VERSION,
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

    def load(self, **fresh: Any) -> ChurnModel:
        """The stored model; a fresh one (with a warning) if missing, corrupt or incompatible.

        `fresh` are the ChurnModel arguments for a model built from scratch.
        """
        header_raw, blob = call(
            lambda: self.client.hmget(self.key, ["header", "blob"]), f"load {self.key}"
        )
        if header_raw is None and blob is None:
            log.warning("churn model: no snapshot at %s; starting a fresh model", self.key)
            return ChurnModel(**fresh)
        try:
            model = self._decode(header_raw, blob)
        except _Unusable as ex:
            log.warning(
                "churn model: snapshot at %s is unusable (%s); starting a fresh model",
                self.key,
                ex,
            )
            return ChurnModel(**fresh)
        return model

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


class _Unusable(Exception):
    """A snapshot that cannot be restored (never leaves this module)."""


class SharedChurnModel:
    """One churn model per process, shared by its worker threads.

    Every label any thread learns goes into the same model, and the snapshot
    is always that model, so several worker threads learn as one would. A
    lock keeps a learn, a score and a pickle from overlapping.
    """

    def __init__(self, model: ChurnModel) -> None:
        self.model = model
        self._lock = threading.Lock()
        self._dirty = False  # learned since the last snapshot was queued

    def predict_one(self, x: Mapping[str, float]) -> float:
        with self._lock:
            return self.model.predict_one(x)

    def learn_one(self, x: Mapping[str, float], y: int, baseline: float | None = None) -> float:
        with self._lock:
            self._dirty = True
            return self.model.learn_one(x, y, baseline)

    def top_features(self, x: Mapping[str, float], k: int = 3) -> list[tuple[str, float]]:
        with self._lock:
            return self.model.top_features(x, k)

    def metrics(self) -> dict[str, Any]:
        with self._lock:
            return self.model.metrics()

    def queue_snapshot(self, pipe: Any, store: ModelStore) -> bool:
        """Queue a snapshot on `pipe` if anything was learned since the last one."""
        with self._lock:
            if not self._dirty:
                return False
            store.queue_save(pipe, self.model)
            self._dirty = False
            return True
