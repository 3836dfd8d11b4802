"""The HTTP side every service shares: error mapping, health, correlation ids, limits."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

import structlog
from fastapi import APIRouter, FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, InterfaceError, OperationalError
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backhaul_kit.context import flow
from backhaul_kit.db import DatabaseBusy
from backhaul_kit.errors import DomainError
from backhaul_kit.metrics import metrics_response

if TYPE_CHECKING:
    from backhaul_kit.runtime import ServiceRuntime

log = structlog.get_logger(__name__)

CORRELATION_HEADER = "X-Correlation-ID"


class ErrorBody(BaseModel):
    """Every error the API returns."""

    error: str
    message: str
    detail: list[dict[str, Any]] | None = None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or invalid bearer token"},
    403: {"model": ErrorBody, "description": "The token lacks the scope this call needs"},
    404: {"model": ErrorBody, "description": "Unknown id"},
    409: {"model": ErrorBody, "description": "Conflicts with the current state"},
    413: {"model": ErrorBody, "description": "Request body too large"},
    431: {"model": ErrorBody, "description": "Request headers too large"},
    422: {"model": ErrorBody, "description": "Invalid input; `detail` names each field"},
    503: {"model": ErrorBody, "description": "Database unavailable or busy; retry after a second"},
}
"""Documented on every API route, so the OpenAPI says what each error looks like."""


def _error(status_code: int, code: str, message: str, detail: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"error": code, "message": message}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(status_code=status_code, content=body)


def _field(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc if part != "body") or "body"


def _is_out_of_range(exc: BaseException) -> bool:
    """Somewhere in the chain, the driver refused a value it cannot represent."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OverflowError | DataError) or "DataError" in type(current).__name__:
            return True
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return False


def install_error_handlers(app: FastAPI) -> None:
    """Map domain errors to 404/409/422 and bad requests to a 422 naming the field."""

    async def on_domain_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DomainError)
        return _error(exc.status_code, exc.code, exc.message)

    async def on_validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        message = "; ".join(f"{_field(e['loc'])}: {e['msg']}" for e in errors[:5])
        detail = [
            {"field": _field(e["loc"]), "message": e["msg"], "type": e["type"]} for e in errors
        ]
        return _error(status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid_input", message, detail)

    async def on_database_error(request: Request, exc: Exception) -> JSONResponse:
        # A value the database cannot hold (an id beyond 64 bits) is the caller's bad input;
        # a database that is down or locked is a 503 the caller can retry; anything else
        # the database refuses is ours.
        if _is_out_of_range(exc):
            return _error(422, "invalid_input", "a value in the request is out of range")
        if isinstance(exc, OperationalError | InterfaceError | DatabaseBusy):
            log.warning("database_unavailable", error=str(exc)[:500])
            response = _error(
                503,
                "unavailable",
                "the database is unavailable or busy; the request was not applied, retry it",
            )
            response.headers["Retry-After"] = "1"
            return response
        return await on_unexpected(request, exc)

    async def on_integrity_error(_: Request, exc: Exception) -> JSONResponse:
        # A constraint the domain did not check first (usually a race): still the caller's
        # conflict, never a 500.
        log.warning("integrity_conflict", error=str(exc.__cause__ or exc)[:500])
        return _error(409, "conflict", "the request conflicts with existing data")

    async def on_http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        codes = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed"}
        response = _error(
            exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail)
        )
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", exc_info=exc)
        return _error(500, "internal_error", "internal error; the request was not applied")

    app.add_exception_handler(DomainError, on_domain_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(IntegrityError, on_integrity_error)
    app.add_exception_handler(OverflowError, on_database_error)
    app.add_exception_handler(DBAPIError, on_database_error)
    app.add_exception_handler(DatabaseBusy, on_database_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)


# The request middlewares are plain ASGI callables, not BaseHTTPMiddleware: that one builds
# a Request, a task group and a body stream per request and per middleware, which is most of
# what an in-process request costs. These read the scope's raw headers and wrap `send`.

_CORRELATION_KEY = CORRELATION_HEADER.lower().encode("latin-1")


def _header(scope: Scope, name: bytes) -> str | None:
    """The first value of header `name` (lower-case, as ASGI servers give names)."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class CorrelationMiddleware:
    """Takes the caller's X-Correlation-ID (or makes one) for everything the request emits,
    and returns it on the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = _header(scope, _CORRELATION_KEY)
        try:
            correlation_id = UUID(raw) if raw else uuid4()
        except ValueError:
            correlation_id = uuid4()
        value = str(correlation_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[CORRELATION_HEADER] = value
            await send(message)

        with flow(correlation_id):
            await self.app(scope, receive, send_with_id)


class BodySizeLimitMiddleware:
    """Refuses a request whose Content-Length exceeds `max_bytes`, with a JSON 413."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = _header(scope, b"content-length")
            if length and length.isdigit() and int(length) > self.max_bytes:
                response = _error(
                    413, "payload_too_large", f"request body exceeds {self.max_bytes} bytes"
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class HeaderSizeLimitMiddleware:
    """Refuses a request whose header lines (`name: value` and CRLF, as on the wire) add up
    to more than `max_bytes`, with a JSON 431 like every other error.

    The HTTP server buffers a request's head before the app sees it; `server_head_limit`
    is the hard cap it is given, above this limit, so that a request slightly over the limit
    gets this clear answer while nothing is buffered without bound (beyond the cap, the server
    itself answers 400)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = sum(len(name) + len(value) + 4 for name, value in scope["headers"])
            if size > self.max_bytes:
                response = _error(
                    431,
                    "request_headers_too_large",
                    f"request headers exceed {self.max_bytes} bytes",
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def server_head_limit(max_header_bytes: int) -> int:
    """What the HTTP server may buffer of a request's head (request line and headers): the
    header limit plus room for a long request line."""
    return max_header_bytes + 16_384


def health_router(runtime: ServiceRuntime) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz", summary="Alive")
    async def healthz() -> dict[str, str]:
        """The process is up and serving."""
        return {"status": "ok", "service": runtime.settings.service_name}

    @router.get("/readyz", summary="Ready: database and Kafka reachable")
    async def readyz() -> JSONResponse:
        """503 until both the service's database and the Kafka cluster answer."""
        checks: dict[str, str] = {}
        try:
            await runtime.db.ping()
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unreachable: {type(exc).__name__}"
        try:
            await runtime.kafka_probe.check()
            checks["kafka"] = "ok"
        except Exception as exc:
            checks["kafka"] = f"unreachable: {type(exc).__name__}"
        ready = all(value == "ok" for value in checks.values())
        return JSONResponse(
            status_code=200 if ready else 503,
            content={"status": "ready" if ready else "not_ready", "checks": checks},
        )

    @router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def metrics() -> Response:
        return metrics_response()

    return router
