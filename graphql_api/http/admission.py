"""Whether a WebSocket has been admitted by the app: what the connection layer (`server.py`) and the
graphql-transport-ws handler (`websocket.py`) share, through the socket's ASGI scope."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

# Where the guarded WebSocket protocol puts its socket's WebSocketAdmission in the ASGI scope.
ADMISSION_EXTENSION = "modelhub.websocket.admission"
# graphql-transport-ws's own code for a socket whose `connection_init` came too late (Strawberry sends it at
# its init timeout); a client may reconnect.
CLOSE_INIT_TIMEOUT = 4408


class WebSocketAdmission:
    """Whether a WebSocket has been admitted by the app (its `connection_init` accepted). The guarded
    WebSocket protocol puts one in the socket's ASGI scope; until the app calls `acknowledge()`, the socket
    is one that waits, and may be closed to make room for a new connection."""

    def __init__(self) -> None:
        self.acknowledged = False

    def acknowledge(self) -> None:
        self.acknowledged = True


def admission_of(scope: MutableMapping[str, Any]) -> WebSocketAdmission | None:
    """The WebSocketAdmission in a WebSocket's ASGI scope (None unless GuardedWebSocketProtocol serves it)."""
    found = scope.get("extensions", {}).get(ADMISSION_EXTENSION)
    return found if isinstance(found, WebSocketAdmission) else None
