"""Checks every operation passes before it executes: an authenticated caller, the price of one operation, the
caller's cost budget, the mutation rate limit; the deadline every database call of the operation runs under,
and the database work it leaves behind when it is abandoned."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pymongo
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from ..auth import ANONYMOUS
from ..db import work
from ..documents import utcnow
from ..errors import DomainError, error
from ..http.caller import client_address
from ..limits import RateLimited, Spent
from .context import Context
from .cost import operation_cost

# Every operation costs at least this, whatever happens to it (a document that fails to parse or validate,
# an operation over the price limit): so a flood of refused documents runs out of budget too.
MIN_COST = 1
REFUSED_QUERY = "{ __typename }"
_kills: set[asyncio.Task[Any]] = set()  # background kills, kept referenced until done


@error
class CostLimitExceeded(DomainError):
    code = "COST_LIMIT_EXCEEDED"
    text = (
        "this operation would cost {cost}, over the limit of {limit}: ask for fewer rows "
        "(first/last/limit), fewer aliases, or exact statistics less often"
    )

    cost: int
    limit: int


def budget_key(context: Context) -> tuple[str, bool]:
    """Whose bucket an operation is paid from: the principal's, or (no principal, a bad token, header mode
    without X-Engineer-ID) its client address's, which is the smaller anonymous bucket."""
    who = context.identity
    if who is not None and context.identity_error is None and who.engineer != ANONYMOUS:
        return "principal:" + who.engineer, False
    return address_key(context)


def address_key(context: Context) -> tuple[str, bool]:
    """The anonymous bucket of the caller's client address (a WebSocket's messages before it is
    acknowledged are paid from it, whatever the upgrade request carried)."""
    return "address:" + (client_address(context.request) or "unknown"), True


class RequestGuards(SchemaExtension):
    """Runs before execution (after parsing and validation): a refused operation executes nothing."""

    cost: int | None = None
    spent: Spent | None = None
    refusal: RateLimited | None = None

    def _report(self, context: Context, spent: Spent) -> None:
        self.spent = spent
        if context.response is not None and context.request.scope["type"] == "http":
            context.response.headers.update(spent.headers())

    def _refused(self, context: Context, exc: RateLimited, requested: int = 0) -> RateLimited:
        """A refusal for want of budget takes nothing (there is nothing left to take)."""
        if exc.quota is not None:
            self._report(context, Spent(requested, 0, exc.quota))
        if context.response is not None and context.request.scope["type"] == "http":
            context.response.headers["retry-after"] = str(max(1, int(exc.retry_after + 0.999)))
        return exc

    @contextmanager
    def budgeted(self) -> Iterator[None]:
        """Around the whole operation (parsing included; OperationHooks.on_operation enters it)."""
        context = self.execution_context.context
        if not isinstance(context, Context):  # executed in-process (schema.introspect()), not for a client
            yield
            return
        key, anonymous = budget_key(context)
        budget = context.services.budget
        try:
            budget.check(key, anonymous)
        except RateLimited as exc:
            # An empty bucket is refused before the caller's document is even parsed: a fixed trivial one
            # runs through parsing and validation instead, and on_execute raises the refusal. (Raising here
            # would escape Strawberry on a WebSocket: its operation hooks are not guarded there.)
            self.refusal = self._refused(context, exc)
            self.execution_context.query = REFUSED_QUERY
            self.execution_context._provided_operation_name = None  # no setter: the document has one
        try:
            yield
        finally:
            self._charge_minimum()

    def _charge_minimum(self) -> None:
        """An operation refused before its price was taken (parse, validation, price limit) costs the
        minimum; called when its results are assembled (a parse failure's come before the operation ends)
        and when it ends, charging once."""
        context = self.execution_context.context
        if self.spent is None and isinstance(context, Context):
            key, anonymous = budget_key(context)
            self._report(context, context.services.budget.charge(key, anonymous, 0, MIN_COST))

    def get_results(self) -> dict[str, Any]:
        self._charge_minimum()
        return {"cost": self.spent.as_extension()} if self.spent is not None else {}

    def on_execute(self) -> Iterator[None]:
        ctx = self.execution_context
        context = ctx.context
        if not isinstance(context, Context):
            yield
            return
        if self.refusal is not None:
            raise self.refusal
        services = context.services
        settings = services.settings
        operation = ctx.operation_type
        key = self._admit(context)
        if operation is OperationType.SUBSCRIPTION:
            yield
            return
        context.cached_reads = operation is OperationType.QUERY
        started_at = utcnow()  # for the model cache: what this operation wrote
        rid = uuid.uuid4().hex
        started = time.monotonic()
        # PyMongo's client-side operation timeout: every call made while executing shares one deadline, and
        # the server is told the time left (maxTimeMS). Raw scans run in pieces under it (events.stats), a
        # few at a time per principal (ScanSlots), each carrying this request's id; an operation that ends
        # past its deadline or is cancelled (its HTTP client left) has whatever still runs killed.
        abandoned = True
        try:
            with (
                pymongo.timeout(settings.request_timeout_seconds),
                work.tagged(rid, settings.request_timeout_seconds),
                services.scans.held(key),
            ):
                yield
            abandoned = time.monotonic() - started >= settings.request_timeout_seconds
        finally:
            if abandoned:
                task = asyncio.ensure_future(work.kill(rid))
                _kills.add(task)
                task.add_done_callback(_kills.discard)
            if operation is OperationType.MUTATION:
                services.models.wrote(started_at)  # this caller's next query reads what its mutation wrote

    def _admit(self, context: Context) -> str:
        """Prices the operation and charges it to the caller's budget (and a mutation's root fields to its
        rate limit), refusing it when either is spent or no caller is identified; the budget's key."""
        ctx = self.execution_context
        services = context.services
        settings = services.settings
        operation = ctx.operation_type
        key, anonymous = budget_key(context)
        budget = services.budget
        cost = MIN_COST
        if ctx.graphql_document is not None:
            volume = services.volume.estimate if services.volume.loaded else None
            priced = operation_cost(ctx.graphql_document, ctx.operation_name, ctx.variables, volume)
            cost = max(MIN_COST, priced)
            self.cost = cost  # for the operation's trace span
        if context.identity is None or context.identity_error is not None:
            # Refused (UNAUTHENTICATED) just below, yet the address pays the price it asked for: a no-token
            # flood of expensive documents runs out of budget as fast as an accepted one would.
            self._report(context, budget.charge(key, anonymous, cost, cost))
        principal = context.principal  # raises Unauthenticated: every operation needs a caller
        limit = min(settings.max_query_cost, budget.bucket(anonymous).peek(key).limit)
        if cost > limit:  # refused at the minimum price, reporting the price it asked
            self._report(context, budget.charge(key, anonymous, cost, MIN_COST))
            raise CostLimitExceeded(cost, limit)
        try:
            self._report(context, budget.spend(key, anonymous, cost))
            if operation is OperationType.MUTATION and ctx.graphql_document is not None:
                roots = _root_fields(ctx.graphql_document, ctx.operation_name)
                services.limiter.take(principal.engineer, roots)
        except RateLimited as exc:
            raise self._refused(context, exc, cost) from None
        return key


def _root_fields(document: object, operation_name: str | None) -> int:
    from graphql import OperationDefinitionNode

    for definition in getattr(document, "definitions", ()):
        if isinstance(definition, OperationDefinitionNode) and (
            operation_name is None or (definition.name and definition.name.value == operation_name)
        ):
            return max(1, len(definition.selection_set.selections))
    return 1
