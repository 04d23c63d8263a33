"""Finishing the OpenAPI document litestar generates, so that it states exactly what the server
does (docs/API.md says how a route keeps to it):

* bodies: the schema of every request and response Struct is msgspec's own
  (:func:`msgspec.json.schema_components`), the library that encodes and decodes them, so an
  array-like Struct is documented as the array it is sent as, a Struct that forbids unknown
  fields says ``additionalProperties: false``, and each field's pattern and bounds are there;
* parameters: each query and path parameter's schema is rebuilt from the handler's signature
  (:func:`parameter_schema`): its type without a ``null`` branch (a query string has no null),
  its bounds as integers (64-bit ids stay exact), and the ranges every route shares (dates and
  periods within MIN_YEAR..MAX_YEAR, cursors within 64 bits, :mod:`service.api.limits`);
* rules between fields that no JSON Schema can state (exactly one of two parameters, two ids
  that must differ) are listed by the handler (``opt={"rules": [...]}``) and documented as its
  422 answer, the status the server gives when one is broken;
* the one error shape on every operation, an example for every request and response body,
  and which routes need no token.

Examples are made from each schema itself (:func:`sample`), so they cannot drift from the
types: a field's own ``examples`` first, then a value that fits its type, pattern or format.
"""

from __future__ import annotations

import datetime as dt
import types
import typing
from collections.abc import Iterator
from typing import Any

import msgspec
from litestar import Litestar, Response
from litestar._openapi.plugin import OpenAPIPlugin
from litestar.handlers import HTTPRouteHandler
from litestar.params import KwargDefinition
from litestar.routes import HTTPRoute
from litestar.types import Empty
from litestar.typing import FieldDefinition

from service.api.errors import ERROR_EXAMPLE, ErrorBody
from service.api.limits import DATE_PATTERN, DATETIME_PATTERN, PERIOD_PATTERN
from service.api.scoping import ROLES

PUBLIC = {("/health", "get"), ("/ready", "get"), ("/auth/token", "post"), ("/auth/password/code", "post")}
METHODS = ("get", "post", "put", "patch", "delete")

_PATTERN_SAMPLES = {
    r"^c-[0-9a-f]{32}$": "c-01937a0c3f2b7c8d9e0f112233445566",
    r"^[a-z0-9-]{1,24}\.[a-z0-9-]{1,24}\.[a-z0-9-]{1,24}$": "gx-lp.xy.v03",
    r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$": "01937a0c-3f2b-7c8d-9e0f-112233445566",
    r"^[0-9]{17}[0-9X]$": "99990120160313001X",
    PERIOD_PATTERN: "2026-06",
    DATE_PATTERN: "2026-06-30",
    DATETIME_PATTERN: "2026-06-30T09:30:00Z",
}
_FORMATS = {"date": "2026-06-30", "date-time": "2026-06-30T09:30:00Z", "uuid": "01937a0c-3f2b-7c8d-9e0f-112233445566"}

_ERRORS = {
    "400": ("The request is invalid: the message names the field and the value.",
            ErrorBody(status=400, code="invalid", message="period='2026-13': period must be YYYY, YYYY-MM, YYYY-S1 "
                      "or YYYY-S2", field="period", value="2026-13")),
    "401": ("No token, or a token that is unknown, expired or revoked.",
            ErrorBody(status=401, code="unauthorized", message="the token is unknown, expired or revoked, or its user "
                      "is disabled; log in again", field="Authorization")),
    "403": ("Your role may not use this route.",
            ErrorBody(status=403, code="forbidden", message="role 'auditor' may not use this route; it is for: "
                      "township", field="role", value="auditor")),
    "404": ("Not found, or not in your scope (the same answer, so existence does not leak).", ERROR_EXAMPLE),
    "default": ("Any other refusal (409, 413, 414, 422, 429, 500, 503), in the same shape.",
                ErrorBody(status=409, code="conflict", message="child c-01937a0c3f2b7c8d9e0f112233445566 has no open "
                          "conflict on field 'guardian'", field="field", value="guardian")),
}


def sample(schema: dict[str, Any], components: dict[str, Any], depth: int = 0) -> Any:
    """A value that fits `schema` (components resolve $ref)."""
    if depth > 12:
        return None
    if "$ref" in schema:
        return sample(components.get(schema["$ref"].rsplit("/", 1)[-1], {}), components, depth + 1)
    if schema.get("examples"):
        ex = schema["examples"]
        return ex[0] if isinstance(ex, list) else next(iter(ex.values()))
    if "example" in schema:
        return schema["example"]
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("oneOf", "anyOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return sample(options[0], components, depth + 1)
    if "allOf" in schema:
        return sample(schema["allOf"][0], components, depth + 1)
    typ = schema.get("type")
    if isinstance(typ, list):
        typ = next((t for t in typ if t != "null"), "null")
    if typ == "object" or "properties" in schema:
        props = schema.get("properties", {})
        required = set(schema.get("required", props))
        return {k: sample(v, components, depth + 1) for k, v in props.items() if k in required or depth < 3}
    if typ == "array":
        if "prefixItems" in schema:
            return [sample(s, components, depth + 1) for s in schema["prefixItems"]]
        return [sample(schema.get("items", {}), components, depth + 1)]
    if typ == "string":
        if schema.get("pattern") in _PATTERN_SAMPLES:
            return _PATTERN_SAMPLES[schema["pattern"]]
        return _FORMATS.get(schema.get("format", ""), "文本")
    if typ == "integer":
        return max(int(schema.get("minimum", 1)), 1) if "maximum" not in schema else int(schema.get("minimum", 0))
    if typ == "number":
        return 12.5
    if typ == "boolean":
        return True
    return None


_REF = "#/components/schemas/{name}"
NO_NUL = "^[^\\u0000]*$"  # JSON Schema's (ECMA 262) and Python's regular expressions both read \u0000
_RULE_EXAMPLE = ErrorBody(status=422, code="invalid", message="kept_child_id and merged_child_id are the same child",
                          field="merged_child_id", value="c-01937a0c3f2b7c8d9e0f112233445566")
# KwargDefinition's bounds and their JSON Schema keywords.
_BOUNDS = (("ge", "minimum"), ("gt", "exclusiveMinimum"), ("le", "maximum"), ("lt", "exclusiveMaximum"),
           ("multiple_of", "multipleOf"))
_LENGTHS = (("min_length", "minLength"), ("max_length", "maxLength"), ("min_items", "minItems"),
            ("max_items", "maxItems"), ("pattern", "pattern"))


def operations(app: Litestar) -> Iterator[tuple[str, str, HTTPRouteHandler]]:
    """(path as the document writes it, method in lower case, handler) of every documented operation."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            if not handler.resolve_include_in_schema():
                continue
            for method in sorted(handler.http_methods):
                yield route.path_format, method.lower(), handler


def _without_none(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kept = [a for a in typing.get_args(annotation) if a is not type(None)]
        return kept[0] if len(kept) == 1 else typing.Union[tuple(kept)]  # noqa: UP007 (built at run time)
    return annotation


def _answer_type(annotation: Any) -> Any:
    """The type an answer is encoded from (a Response[T] answers T), or None (bytes, text, none)."""
    if typing.get_origin(annotation) is Response or annotation is Response:
        args = typing.get_args(annotation)
        annotation = args[0] if args else None
    return None if annotation in (None, bytes, str, type(None), Any) else annotation


def _parameter_fields(handler: HTTPRouteHandler) -> dict[str, FieldDefinition]:
    """The handler's parameters by the name they are sent under."""
    fields: dict[str, FieldDefinition] = {}
    for name, field in handler.parsed_fn_signature.parameters.items():
        kwarg = field.kwarg_definition
        sent = (getattr(kwarg, "name", None) or getattr(kwarg, "query", None) or getattr(kwarg, "header", None)
                or getattr(kwarg, "cookie", None) or name)
        fields[sent] = field
    return fields


class Schemas:
    """msgspec's schemas of every type the document names (request bodies, answers, parameters),
    from one call, so that components are msgspec's and two types of one name get two names
    (service.api.children.FollowUpRule, the enum, beside events.rules.FollowUpRule, the rule)."""

    def __init__(self, app: Litestar) -> None:
        found: list[Any] = []
        for _, _, handler in operations(app):
            sig = handler.parsed_fn_signature
            data = sig.parameters.get("data")
            wanted = [_answer_type(sig.return_type.annotation), data.annotation if data is not None else None,
                      *(_without_none(f.annotation) for f in _parameter_fields(handler).values())]
            for t in wanted:
                if t is None or t in found:
                    continue
                try:
                    msgspec.json.schema(t)
                except (TypeError, ValueError):  # not a type msgspec encodes (a Request, State...)
                    continue
                found.append(t)
        schemas, self.components = msgspec.json.schema_components(found, ref_template=_REF)
        self.of = dict(zip(found, schemas, strict=True))

    def get(self, annotation: Any) -> dict[str, Any] | None:
        schema = self.of.get(annotation)
        return None if schema is None else dict(schema)


def no_nul(schema: dict[str, Any], components: dict[str, Any], seen: set[str]) -> None:
    """Say of every free text in `schema` that it holds no NUL character: the server refuses one
    anywhere in a request (app._bounded_input), PostgreSQL text could not store it. Text with a
    pattern, a format or a list of values says so already."""
    ref = schema.get("$ref")
    if ref is not None:
        name = ref.rsplit("/", 1)[-1]
        if name not in seen and name in components:
            seen.add(name)
            no_nul(components[name], components, seen)
        return
    if schema.get("type") == "string" and not {"pattern", "format", "enum", "const"} & schema.keys():
        schema["pattern"] = NO_NUL
    if schema.get("type") == "object" and isinstance(schema.get("additionalProperties"), dict):
        schema.setdefault("propertyNames", {"pattern": NO_NUL})
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            no_nul(schema[key], components, seen)
    for sub in schema.get("properties", {}).values():
        no_nul(sub, components, seen)
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        for sub in schema.get(key, []):
            no_nul(sub, components, seen)


def parameter_schema(field: FieldDefinition, schemas: Schemas) -> dict[str, Any]:
    """A query or path parameter's schema from the handler's signature: msgspec's schema of its type
    (with null only where litestar reads the word as "not given"), the parameter's own bounds
    (integers stay integers, so a 64-bit bound is exact), and the ranges every route shares
    (service.api.limits)."""
    annotation = _without_none(field.annotation)
    schema = schemas.get(annotation) or {}
    kwarg = field.kwarg_definition if isinstance(field.kwarg_definition, KwargDefinition) else None
    integer = schema.get("type") == "integer"
    if kwarg is not None:
        for attr, key in _BOUNDS:
            value = getattr(kwarg, attr)
            if value is not None:
                schema[key] = int(value) if integer and float(value).is_integer() else value
        for attr, key in _LENGTHS:
            value = getattr(kwarg, attr)
            if value is not None:
                schema[key] = value
    if schema.get("type") == "string" and not {"pattern", "format", "enum"} & schema.keys():
        schema["pattern"] = NO_NUL
    if annotation is dt.date:
        schema["pattern"] = DATE_PATTERN
    elif annotation is dt.datetime:  # with its zone: a time without one is refused
        schema.update(format="date-time", pattern=DATETIME_PATTERN)
    if annotation is not field.annotation and annotation is not str:
        # Litestar reads the word "null" as "not given" for an optional number, date, enum or
        # boolean (for text it is the text "null"), so the document says a null is accepted.
        schema = {"anyOf": [schema, {"type": "null"}]}
    if field.default is not Empty and field.default is not None:
        schema["default"] = msgspec.to_builtins(field.default)
    return schema


def _parameters(op: dict[str, Any], handler: HTTPRouteHandler, schemas: Schemas) -> None:
    fields = _parameter_fields(handler)
    for p in op.get("parameters", []):
        found = fields.get(p["name"])
        if found is None or p.get("in") not in ("query", "path"):
            continue
        description = p.get("schema", {}).get("description")
        p["schema"] = parameter_schema(found, schemas)
        if description and "description" not in p:
            p["description"] = description


def _bodies(op: dict[str, Any], handler: HTTPRouteHandler, schemas: Schemas) -> dict[str, Any] | None:
    """Put msgspec's schemas of the handler's body and answer in the operation; the body's schema."""
    sig = handler.parsed_fn_signature
    data = sig.parameters.get("data")
    body = None
    if data is not None:
        body = schemas.get(data.annotation)
        media = op.get("requestBody", {}).get("content", {}).get("application/json")
        if body is not None and media is not None:
            media["schema"] = body
    answer = schemas.get(_answer_type(sig.return_type.annotation))
    content = (op.get("responses", {}).get(str(handler.status_code)) or {}).get("content") or {}
    if answer is not None and "application/json" in content:
        content["application/json"]["schema"] = answer
    return body


def _referenced(value: Any, components: dict[str, Any], out: set[str]) -> None:
    """The names of the components `value` refers to, directly or through other components."""
    if isinstance(value, dict):
        ref = value.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            name = ref.rsplit("/", 1)[-1]
            if name not in out:
                out.add(name)
                _referenced(components.get(name), components, out)
        for v in value.values():
            _referenced(v, components, out)
    elif isinstance(value, list):
        for v in value:
            _referenced(v, components, out)


def roles_of(handler: HTTPRouteHandler) -> list[str]:
    """The roles the handler's guards let in (every role when no guard names any)."""
    allowed = set(ROLES)
    for guard in handler.resolve_guards():
        allowed &= set(getattr(guard, "roles", ROLES))
    return [r for r in ROLES if r in allowed]


def _rules(op: dict[str, Any], handler: HTTPRouteHandler) -> None:
    """A 422 answer documented with the rules the handler lists (opt={"rules": [...]})."""
    rules = list(handler.opt.get("rules", ()))
    if not rules:
        return
    op["x-rules"] = rules
    op["responses"]["422"] = _error_response(
        "Well-formed, but breaks a rule between fields that JSON Schema cannot state: " + "; ".join(rules) + ".",
        _RULE_EXAMPLE)


def _error_response(description: str, example: ErrorBody) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/ErrorBody"},
        "examples": {"error": {"value": msgspec.to_builtins(example)}}}}}


def document(app: Litestar) -> dict[str, Any]:
    """Finish the app's OpenAPI document in place (it is built once and cached) and return it."""
    doc: dict[str, Any] = app.plugins.get(OpenAPIPlugin).provide_openapi_schema()
    litestars = doc.setdefault("components", {}).get("schemas", {})
    schemas = Schemas(app)
    components = dict(schemas.components)
    _, extra = msgspec.json.schema_components([ErrorBody], ref_template=_REF)
    components.update(extra)
    lookup = {**litestars, **components}  # for the examples: where a $ref leads, whoever wrote it
    handlers = {(path, method): handler for path, method, handler in operations(app)}
    bodies: list[dict[str, Any]] = []
    for path, item in doc.get("paths", {}).items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            handler = handlers.get((path, method))
            if handler is not None:
                _parameters(op, handler, schemas)
                body = _bodies(op, handler, schemas)
                if body is not None:
                    bodies.append(body)
            public = (path, method) in PUBLIC
            if handler is not None and not public:
                op["x-roles"] = roles_of(handler)  # who may call it; tests/test_api_schema.py calls it as each
            if public:
                op["security"] = []
            responses: dict[str, Any] = op.setdefault("responses", {})
            for status in list(responses):
                if status[0] in "45":
                    del responses[status]
            for resp in responses.values():
                for media, content in (resp.get("content") or {}).items():
                    if "examples" in content or "schema" not in content:
                        continue
                    if "json" in media:
                        content["examples"] = {"example": {"value": sample(content["schema"], lookup)}}
                    else:
                        content["schema"] = {"type": "string", "format": "binary"}
                        content["examples"] = {"example": {"summary": f"a {media} file", "value": ""}}
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None and "examples" not in body:
                body["examples"] = {"example": {"value": sample(body["schema"], lookup)}}
            for p in op.get("parameters", []):
                if "examples" not in p and "example" not in p:
                    p["examples"] = {"example": {"value": sample(p.get("schema", {}), lookup)}}
            if (path, method) == ("/ready", "get"):
                responses["503"] = {"description": "Not ready: the same body, with the failing checks",
                                    "content": responses["200"]["content"]}
            for status, (description, example) in _ERRORS.items():
                if public and status in ("401", "403", "404"):
                    continue
                responses[status] = _error_response(description, example)
            if handler is not None:
                _rules(op, handler)
    seen: set[str] = set()
    for body in bodies:
        no_nul(body, components, seen)
    # What litestar described that msgspec did not (a type only litestar knows): kept as it wrote it.
    used: set[str] = set()
    _referenced(doc["paths"], {**litestars, **components}, used)
    for name in sorted(used - components.keys()):
        if name in litestars:
            components[name] = litestars[name]
    doc["components"]["schemas"] = components
    return doc
