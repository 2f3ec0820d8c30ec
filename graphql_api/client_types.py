"""The SDK's typed results, under their first import path: they live in `graphql_api.sdk.types`.

Like `graphql_api.client`, this imports no server module, so a client-only install (`pip install modelhub`)
has it.
"""

from __future__ import annotations

from .sdk.types import *  # noqa: F403
from .sdk.types import __all__ as __all__
