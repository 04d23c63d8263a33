"""Finishing the OpenAPI document litestar generates: the one error shape on every operation,
an example for every request and response body, and which routes need no token.

Examples are made from each schema itself (:func:`sample`), so they cannot drift from the
types: a field's own ``examples`` first, then a value that fits its type, pattern or format.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar
from litestar._openapi.plugin import OpenAPIPlugin

from service.api.errors import ERROR_EXAMPLE, ErrorBody

PUBLIC = {("/health", "get"), ("/ready", "get"), ("/auth/token", "post"), ("/auth/password/code", "post")}
METHODS = ("get", "post", "put", "patch", "delete")

_PATTERN_SAMPLES = {
    r"^c-[0-9a-f]{32}$": "c-01937a0c3f2b7c8d9e0f112233445566",
    r"^[a-z0-9-]{1,24}\.[a-z0-9-]{1,24}\.[a-z0-9-]{1,24}$": "gx-lp.xy.v03",
    r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$": "01937a0c-3f2b-7c8d-9e0f-112233445566",
    r"^[0-9]{17}[0-9X]$": "99990120160313001X",
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
    "default": ("Any other refusal (409, 413, 414, 429, 500, 503), in the same shape.",
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


def _error_response(description: str, example: ErrorBody) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/ErrorBody"},
        "examples": {"error": {"value": msgspec.to_builtins(example)}}}}}


def document(app: Litestar) -> dict[str, Any]:
    """Finish the app's OpenAPI document in place (it is built once and cached) and return it."""
    doc: dict[str, Any] = app.plugins.get(OpenAPIPlugin).provide_openapi_schema()
    components = doc.setdefault("components", {}).setdefault("schemas", {})
    _, extra = msgspec.json.schema_components([ErrorBody], ref_template="#/components/schemas/{name}")
    components.update(extra)
    for path, item in doc.get("paths", {}).items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            public = (path, method) in PUBLIC
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
                        content["examples"] = {"example": {"value": sample(content["schema"], components)}}
                    else:
                        content["schema"] = {"type": "string", "format": "binary"}
                        content["examples"] = {"example": {"summary": f"a {media} file", "value": ""}}
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None and "examples" not in body:
                body["examples"] = {"example": {"value": sample(body["schema"], components)}}
            for p in op.get("parameters", []):
                if "examples" not in p and "example" not in p:
                    p["examples"] = {"example": {"value": sample(p.get("schema", {}), components)}}
            if (path, method) == ("/ready", "get"):
                responses["503"] = {"description": "Not ready: the same body, with the failing checks",
                                    "content": responses["200"]["content"]}
            for status, (description, example) in _ERRORS.items():
                if public and status in ("401", "403", "404"):
                    continue
                responses[status] = _error_response(description, example)
    return doc
