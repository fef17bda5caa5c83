"""Opening Redis: one check at start that turns a wrong password, an unknown
ACL user or an unreachable server into a one-line `StateError`.

Without it the first Redis call happens inside a dataflow worker, where the
failure surfaces as a long traceback wrapped by Bytewax.
"""

from __future__ import annotations

import redis
from redis.connection import parse_url

from common.settings import mask_url
from state.errors import StateError

CHECK_TIMEOUT_S = 5.0

_AUTH_HINT = "check redis.password / REDIS_PASSWORD (and redis.username / REDIS_USERNAME)"


def check_redis(url: str, *, timeout: float = CHECK_TIMEOUT_S) -> None:
    """PING `url` (authenticating as it says); raise StateError with one line if it fails."""
    try:
        kwargs = parse_url(url)
    except ValueError as ex:
        raise StateError(f"redis: bad URL {mask_url(url)!r}: {ex}") from ex
    where = kwargs.get("path") or f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
    user = kwargs.get("username") or "default"
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
    except redis.AuthenticationError as ex:
        if not kwargs.get("password"):
            raise StateError(
                f"redis: {where} requires a password and none was given: {_AUTH_HINT}"
            ) from ex
        raise StateError(
            f"redis: authentication as user {user!r} at {where} failed ({_first_line(ex)}): "
            f"{_AUTH_HINT}"
        ) from ex
    except redis.ResponseError as ex:
        # NOPERM (an ACL user without PING/+@connection) and AUTH against a
        # server without a password arrive as plain error replies.
        raise StateError(
            f"redis: {where} refused user {user!r} ({_first_line(ex)}): {_AUTH_HINT}"
        ) from ex
    except redis.RedisError as ex:
        raise StateError(f"redis: cannot reach {where}: {_first_line(ex)}") from ex
    finally:
        client.close()


def _first_line(ex: BaseException) -> str:
    text = str(ex).strip() or type(ex).__name__
    return text.splitlines()[0]
