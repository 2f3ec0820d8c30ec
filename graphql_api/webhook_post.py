"""One webhook attempt over HTTP: the signed body POSTed to an address of its host checked just now, the
receiver's answer (Retry-After), and the backoff between attempts."""

from __future__ import annotations

import asyncio
import email.utils
import random
from datetime import UTC, datetime

import httpx

from . import targets, webhooks
from .config import Settings
from .documents import Webhook, WebhookDelivery

MAX_ERROR_CHARS = 300


def backoff(attempts: int, initial: float, cap: float) -> float:
    """Exponential backoff with jitter: about initial * 2^(attempts-1), capped, drawn from its upper half."""
    delay: float = min(cap, initial * 2.0 ** min(attempts - 1, 40))
    return delay * random.uniform(0.5, 1.0)


def retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds a `Retry-After` header asks for (delta-seconds or an HTTP date); None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


async def send(
    client: httpx.AsyncClient, settings: Settings, hook: Webhook, delivery: WebhookDelivery, now: datetime
) -> tuple[int | None, float | None, str | None]:
    """One POST: the receiver's status, the wait it asked for (Retry-After), and what went wrong (None:
    delivered)."""
    status: int | None = None
    wait: float | None = None
    error: str | None = None
    try:
        status, wait = await post(client, settings, hook, delivery, now)
        if not 200 <= status < 300:
            error = f"the receiver answered HTTP {status}"
    except targets.UnsafeTarget as exc:
        error = f"refused: {exc}"
    except (httpx.HTTPError, TimeoutError, OSError) as exc:
        error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS] if str(exc) else type(exc).__name__
    return status, wait, error


async def post(
    client: httpx.AsyncClient, settings: Settings, hook: Webhook, delivery: WebhookDelivery, now: datetime
) -> tuple[int, float | None]:
    """POSTs the signed body to an address of the webhook's host checked just now (no second lookup,
    so DNS cannot rebind it between check and connect); redirects are answers, not followed; at most
    the response cap of the body is read."""
    async with asyncio.timeout(settings.webhook_timeout_seconds):
        target = targets.parse(hook.url)
        addresses = await targets.resolve(target, settings.webhook_allowed_hosts)
        headers = webhooks.signed_headers(hook.secret, delivery.id, delivery.body, now)
        headers["host"] = target.host_header
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        request = client.build_request(
            "POST", target.url_for(addresses[0]), content=delivery.body.encode(), headers=headers,
            extensions=extensions,
        )  # fmt: skip
        response = await client.send(request, stream=True, follow_redirects=False)
        try:
            read = 0
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read >= settings.webhook_response_cap_bytes:
                    break
        finally:
            await response.aclose()
        return response.status_code, retry_after(response.headers.get("retry-after"), now)
