"""`modelhub serve`'s uvicorn config: WebSocket messages capped as request bodies are."""

from __future__ import annotations

from graphql_api.cli.server import uvicorn_config
from graphql_api.config import Settings


def test_serve_caps_websocket_messages_at_the_body_limit() -> None:
    """uvicorn is given MODELHUB_MAX_BODY_BYTES as `ws_max_size` (its own default is 16 MiB)."""
    settings = Settings(max_body_bytes=12_345)
    config = uvicorn_config(settings, "graphql_api.cli.server:served_app_from_env", {"port": 0}, 1)
    assert config.ws_max_size == 12_345
    assert uvicorn_config(Settings(), "x:y", {}, 2).ws_max_size == Settings().max_body_bytes
