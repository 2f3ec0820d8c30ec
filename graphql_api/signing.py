"""HMAC-signed, expiring tokens: download tickets and the local store's presigned URLs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

from .errors import TicketInvalid, TicketProblem


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """Signs a JSON payload with an expiry; `purpose` keeps one kind of token from passing as another."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _mac(self, purpose: str, body: str) -> str:
        return _b64(hmac.new(self._secret, f"{purpose}.{body}".encode(), hashlib.sha256).digest())

    def sign(self, purpose: str, payload: dict[str, Any], expires_at: float) -> str:
        body = _b64(json.dumps({**payload, "exp": int(expires_at)}, separators=(",", ":")).encode())
        return f"{body}.{self._mac(purpose, body)}"

    def verify(self, purpose: str, token: str, now: float | None = None) -> dict[str, Any]:
        body, _, mac = token.partition(".")
        if not body or not mac or not token.isascii() or len(token) > 4096:
            raise TicketInvalid("malformed ticket", TicketProblem.MALFORMED)
        if not hmac.compare_digest(mac, self._mac(purpose, body)):
            raise TicketInvalid("ticket signature does not match", TicketProblem.FORBIDDEN)
        try:
            payload = json.loads(_unb64(body))
        except ValueError as exc:  # pragma: no cover - a valid MAC over bad JSON needs the secret
            raise TicketInvalid("malformed ticket", TicketProblem.MALFORMED) from exc
        if not isinstance(payload, dict) or not isinstance(payload.get("exp"), int):
            raise TicketInvalid("malformed ticket", TicketProblem.MALFORMED)
        if payload["exp"] < (time.time() if now is None else now):
            raise TicketInvalid("ticket has expired", TicketProblem.EXPIRED)
        return payload
