"""The Subscription root: the live download feed over graphql-transport-ws."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Annotated

import strawberry

from .context import Info
from .downloads import DownloadEvent, DownloadFilter, DownloadStatus


@strawberry.type(description="One status transition of a download, with the cursor to resume after it.")
class DownloadEventUpdate:
    cursor: str = strawberry.field(description="Pass as `after` when reconnecting to miss nothing.")
    status: DownloadStatus = strawberry.field(description="The status the download moved to.")
    event: DownloadEvent = strawberry.field(
        description="The download (as it is now: it may be further along)."
    )


@strawberry.type(description="Live feeds (graphql-transport-ws on /graphql).")
class Subscription:
    @strawberry.subscription(
        description="Status transitions of downloads (issued, started, completed, aborted, failed; not "
        "progress) on every instance, as they happen. A subscriber that falls more than a buffer behind gets "
        "SUBSCRIBER_TOO_SLOW and can reconnect with `after`; past a cap on live subscriptions (per "
        "principal, per instance) a new one gets SUBSCRIPTION_LIMIT_REACHED."
    )
    async def download_events(
        self,
        info: Info,
        filter: Annotated[DownloadFilter | None, strawberry.argument(description="Which downloads.")] = None,
        after: Annotated[
            str | None,
            strawberry.argument(description="The `cursor` of the last update seen: resume after it."),
        ] = None,
    ) -> AsyncGenerator[DownloadEventUpdate, None]:
        query = (filter or DownloadFilter()).to_query()
        ctx = info.context
        owner = ctx.principal.engineer
        async for item in ctx.services.feed.follow(ctx.scope, query, owner, after):
            yield DownloadEventUpdate(
                cursor=item.cursor,
                status=item.status,
                event=DownloadEvent.from_doc(item.event),
            )
