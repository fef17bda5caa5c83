"""Decoding what Redis and the Lua scripts send back, in one place."""

from __future__ import annotations

from typing import Any


def as_list(v: Any) -> list[Any]:
    """A JSON list from a script; cjson encodes an empty Lua table as {}, so that is []."""
    return v if isinstance(v, list) else []


def text(v: Any) -> str:
    """A Redis string reply (bytes) as text."""
    return v.decode() if isinstance(v, bytes) else v
