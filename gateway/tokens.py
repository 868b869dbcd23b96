"""Access tokens for the live feeds and the HTTP API: HMAC-signed, expiring, scoped.

A token is three dot-separated parts, ``fs1.<claims>.<signature>``:

* ``claims``: base64url (no padding) of a compact JSON object: ``scope`` (``work_order`` or
  ``dispatcher``), ``wo`` (the work order, customer tokens), ``region`` (dispatcher tokens;
  ``null`` means every region), ``iat`` and ``exp`` (Unix seconds), ``nonce`` (so two tokens
  issued in the same second differ);
* ``signature``: base64url of HMAC-SHA256 over ``fs1.<claims>`` with the gateway's key.

:func:`verify` is pure: it takes the key and the current time and returns a :class:`Grant` or
a :class:`TokenRefusal` naming what is wrong (missing, malformed or tampered, expired). Which
feed a grant opens is decided by :meth:`Grant.allows_track` and :meth:`Grant.allows_dispatch`.

The key comes from ``FIELDSTREAM_TOKEN_KEY`` (at least 32 characters) or, when that is unset,
from ``DATA_DIR/token.key``, created with 32 random bytes (mode 0600) on first use; every
gateway that must accept a token needs the key that signed it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson

PREFIX = "fs1"
KEY_ENV = "FIELDSTREAM_TOKEN_KEY"
KEY_FILE = "token.key"
MIN_KEY_CHARS = 32
MAX_TOKEN_CHARS = 2048
"""Anything longer is not a token of ours (and is not worth hashing)."""

CUSTOMER_TTL_S = 24 * 3600
DISPATCHER_TTL_S = 12 * 3600


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token allows."""

    scope: str
    """``work_order`` (a customer) or ``dispatcher``."""
    work_order: str | None
    region: str | None
    """A dispatcher's region; ``None``: every region."""
    expires_at: int
    """Unix seconds."""

    def allows_track(self, work_order: str) -> bool:
        """A customer token opens its own work order's feed only (dispatchers use theirs)."""
        return self.scope == "work_order" and self.work_order == work_order

    def allows_dispatch(self, region: str | None) -> bool:
        """A dispatcher token opens its region's feed; an all-regions token opens any."""
        if self.scope != "dispatcher":
            return False
        return self.region is None or self.region == region


@dataclass(frozen=True, slots=True)
class TokenRefusal:
    """Why a token was refused: ``missing``, ``invalid`` (malformed, tampered, signed with
    another key) or ``expired``, and a sentence for the client."""

    reason: str
    message: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key: bytes, body: str) -> str:
    return _b64(hmac.new(key, body.encode("ascii"), hashlib.sha256).digest())


def issue_customer(key: bytes, work_order: str, *, now: int, ttl_s: int = CUSTOMER_TTL_S) -> str:
    """A token for one work order's customer feed, valid ``ttl_s`` seconds from ``now``."""
    if not work_order:
        raise ValueError("a customer token needs a work order id")
    return _issue(key, {"scope": "work_order", "wo": work_order}, now, ttl_s)


def issue_dispatcher(
    key: bytes, region: str | None = None, *, now: int, ttl_s: int = DISPATCHER_TTL_S
) -> str:
    """A token for the dispatcher feed of ``region`` (``None``: every region)."""
    return _issue(key, {"scope": "dispatcher", "region": region or None}, now, ttl_s)


def _issue(key: bytes, claims: dict[str, object], now: int, ttl_s: int) -> str:
    if ttl_s <= 0:
        raise ValueError("a token must live at least one second")
    doc = {**claims, "iat": now, "exp": now + ttl_s, "nonce": secrets.token_hex(4)}
    body = f"{PREFIX}.{_b64(orjson.dumps(doc))}"
    return f"{body}.{_sign(key, body)}"


def verify(key: bytes, token: str | None, *, now: int) -> Grant | TokenRefusal:
    """Check a token's signature, then its expiry; never raises, whatever the text."""
    if not token:
        return TokenRefusal("missing", "a token is required (?token=... or Authorization)")
    if len(token) > MAX_TOKEN_CHARS:
        return TokenRefusal("invalid", "not a fieldstream token")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        return TokenRefusal("invalid", "not a fieldstream token")
    body = f"{parts[0]}.{parts[1]}"
    if not hmac.compare_digest(_sign(key, body), parts[2]):
        return TokenRefusal("invalid", "token signature does not match (tampered or foreign)")
    try:
        doc = orjson.loads(_unb64(parts[1]))
        scope = doc["scope"]
        expires = int(doc["exp"])
        if scope == "work_order":
            grant = Grant(scope, str(doc["wo"]), None, expires)
        elif scope == "dispatcher":
            region = doc.get("region")
            grant = Grant(scope, None, None if region is None else str(region), expires)
        else:
            return TokenRefusal("invalid", f"unknown token scope {scope!r}")
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        return TokenRefusal("invalid", "token claims are unreadable")
    if now >= grant.expires_at:
        return TokenRefusal("expired", "token expired; ask for a new one")
    return grant


def load_key(data_dir: Path, env: Mapping[str, str] | None = None) -> bytes:
    """The signing key: ``$FIELDSTREAM_TOKEN_KEY``, else ``data_dir/token.key`` (created with
    32 random bytes, readable by its owner only, the first time it is needed)."""
    env = os.environ if env is None else env
    if text := env.get(KEY_ENV):
        if len(text) < MIN_KEY_CHARS:
            raise ValueError(f"{KEY_ENV} must be at least {MIN_KEY_CHARS} characters long")
        return text.encode()
    path = Path(data_dir) / KEY_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = secrets.token_bytes(32)
    # Written aside, then linked into place: link fails if the name exists, so of two
    # processes creating the key at once one wins and the other reads the winner's whole key.
    temp = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(fresh.hex() + "\n")
    try:
        os.link(temp, path)
    except FileExistsError:
        return bytes.fromhex(path.read_text().strip())
    finally:
        temp.unlink()
    return fresh
