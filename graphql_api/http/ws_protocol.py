"""uvicorn's WebSocket protocol, with the closing handshake bounded: once the app has closed a socket
(4429 for a spent budget, 4400 for an unreadable message, 4401, …), uvicorn keeps reading for up to 10 s,
parsing and discarding every frame, until the peer's close reply comes. A peer that ignores the close and
keeps sending made the server parse its flood at full speed for those 10 s (4 such sockets: 8 s of CPU,
another client's query waiting 14 s); here it may send CLOSE_DRAIN_BYTES more, then the connection is
dropped."""

from __future__ import annotations

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

# What a peer may still send after the server's close frame (what was in flight, and its close reply).
CLOSE_DRAIN_BYTES = 64 * 1024


class BoundedCloseProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol (its default with `websockets` installed), reading at most
    CLOSE_DRAIN_BYTES after the app's close before it drops the connection."""

    drained = 0

    def data_received(self, data: bytes) -> None:
        if self.close_sent and self.handshake_complete and not self.transport.is_closing():
            self.drained += len(data)
            if self.drained > CLOSE_DRAIN_BYTES:
                self.transport.close()
                return
        super().data_received(data)
