"""Pseudonymous customer ids: a keyed hash (HMAC-SHA256) of the raw id.

The pseudonym is the first 16 bytes (128 bits) of HMAC-SHA256(key, UTF-8 id),
written as 32 lowercase hex digits. The same key always gives the same
pseudonym, so counts, segments and anonymous-to-customer stitching work as on
raw ids; without the key a pseudonym cannot be computed from a guessed id.
Anyone holding the key can compute it, e.g. in PostgreSQL:
``left(encode(hmac(id, key, 'sha256'), 'hex'), 32)``.
"""

from __future__ import annotations

import hashlib
import hmac

PSEUDONYM_HEX_DIGITS = 32


class Pseudonymizer:
    """Maps raw customer and anonymous ids to their pseudonyms under one key."""

    __slots__ = ("_key",)

    def __init__(self, key: str | bytes) -> None:
        self._key = key.encode() if isinstance(key, str) else bytes(key)
        if not self._key:
            raise ValueError("a pseudonym key must not be empty")

    def __call__(self, raw: str) -> str:
        digest = hmac.new(self._key, raw.encode("utf-8"), hashlib.sha256).hexdigest()
        return digest[:PSEUDONYM_HEX_DIGITS]

    def optional(self, raw: str | None) -> str | None:
        return None if raw is None else self(raw)

    def __repr__(self) -> str:
        return "Pseudonymizer(key=***)"
