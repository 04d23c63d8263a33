"""One JSON error shape for every refusal: status, code, message, and the field and value at fault.

Litestar's own exceptions (validation, 401/403/404/405/413) are mapped onto it, so a client
never sees two shapes. A 500 says nothing about the data; the log gets the route and the error
type only (children's data never goes to the log).
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from runtime import log

_log = log.get("service.api")

_CODES = {
    400: "invalid",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    414: "too_large",
    422: "invalid",
    429: "too_many_attempts",
    500: "internal",
    503: "unavailable",
}


class FieldProblem(msgspec.Struct, frozen=True, omit_defaults=True):
    field: str
    message: str
    value: str | None = None


class ErrorBody(msgspec.Struct, frozen=True, omit_defaults=True):
    """Every error the API returns has this shape."""

    status: int
    code: str
    message: str
    field: str | None = None
    value: str | None = None
    problems: list[FieldProblem] = []


class ApiError(HTTPException):
    """An error with a code and, where it is about one input, the field and its value."""

    def __init__(self, status: int, message: str, *, code: str | None = None, field: str | None = None,
                 value: object = None, problems: list[FieldProblem] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail=message, status_code=status, headers=headers)
        self.code = code or _CODES.get(status, "error")
        self.field = field
        self.value = None if value is None else show(value)
        self.problems = problems or []


def show(value: object, limit: int = 80) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def not_found(what: str, value: object, field: str) -> ApiError:
    return ApiError(404, f"{what} {show(value)!s} was not found", field=field, value=value)


def bad(field: str, value: object, why: str) -> ApiError:
    """400: the value breaks what the OpenAPI document states of the field."""
    return ApiError(400, f"{field}={show(value)!r}: {why}", field=field, value=value)


def broken_rule(field: str, value: object, why: str) -> ApiError:
    """422: every field is as the document states, together they break a rule between fields that
    JSON Schema cannot state; the route lists the rule (``opt={"rules": [...]}``, docs/API.md)."""
    return ApiError(422, f"{field}={show(value)!r}: {why}", field=field, value=value)


def _respond(body: ErrorBody, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(content=msgspec.json.encode(body), status_code=body.status, media_type=MediaType.JSON,
                    headers=headers)


def _validation_body(request: Request[Any, Any, Any], exc: ValidationException) -> ErrorBody:
    problems: list[FieldProblem] = []
    extra = exc.extra if isinstance(exc.extra, list) else []
    for item in extra:
        if not isinstance(item, dict):
            continue
        key = str(item.get("key") or "body")
        source = item.get("source")
        raw: object = None
        if source == "query":
            raw = request.query_params.get(key)
        elif source == "path":
            raw = request.path_params.get(key)
        problems.append(FieldProblem(field=key, message=str(item.get("message", "invalid")),
                                     value=None if raw is None else show(raw)))
    if not problems:
        return ErrorBody(status=400, code="invalid", message=str(exc.detail))
    first = problems[0]
    shown = f"={first.value!r}" if first.value is not None else ""
    message = f"{first.field}{shown}: {first.message}"
    if len(problems) > 1:
        message += f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
    return ErrorBody(status=400, code="invalid", message=message, field=first.field, value=first.value,
                     problems=problems)


def handle_http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if isinstance(exc, ValidationException):
        return _respond(_validation_body(request, exc))
    status = exc.status_code
    if isinstance(exc, ApiError):
        body = ErrorBody(status=status, code=exc.code, message=str(exc.detail), field=exc.field, value=exc.value,
                         problems=exc.problems)
    else:
        message = str(exc.detail) if exc.detail else _CODES.get(status, "error")
        if status == 404 and message == "Not Found":
            message = f"no such route: {request.method} {show(request.url.path)}"
        body = ErrorBody(status=status, code=_CODES.get(status, "error"), message=message)
    return _respond(body, dict(exc.headers) if exc.headers else None)


def handle_internal(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    _log.error("api request failed", route=request.scope.get("path_template", request.url.path),
               method=request.method, error=type(exc).__name__)
    return _respond(ErrorBody(status=500, code="internal",
                              message="the center could not answer this request; it has been logged"))


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    HTTPException: handle_http,
    HTTP_500_INTERNAL_SERVER_ERROR: handle_internal,
    Exception: handle_internal,
}

# What every route may answer besides its success, for the OpenAPI document.
ERROR_EXAMPLE = ErrorBody(status=404, code="not_found", message="child c-01937a0c3f2b7c8d9e0f112233445566 was "
                          "not found", field="child_id", value="c-01937a0c3f2b7c8d9e0f112233445566")
