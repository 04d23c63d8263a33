"""The users routes answer the one user type (service.api.auth.User) under the OpenAPI schema name
clients were generated against (UserOut)."""

from __future__ import annotations

from runtime.settings import Settings
from service.api import auth
from service.api.app import create_app
from service.api.config import ApiSettings


def test_users_routes_answer_the_user_type_named_user_out() -> None:
    """GET /users items, POST /users and POST /users/{username}/disable refer to the component
    UserOut, whose properties are exactly the fields of auth.User (and no User component exists)."""
    app = create_app(Settings(database_url="postgresql://postgres@127.0.0.1:5432/unused",
                              nats_url="nats://127.0.0.1:4222"), ApiSettings(connect_nats=False))
    doc = app.openapi_schema.to_schema()
    schemas = doc["components"]["schemas"]
    assert "User" not in schemas
    assert list(schemas["UserOut"]["properties"]) == list(auth.User.__struct_fields__)
    assert sorted(schemas["UserOut"]["required"]) == sorted(auth.User.__struct_fields__)
    ref = {"$ref": "#/components/schemas/UserOut"}
    assert schemas["UserList"]["properties"]["items"]["items"] == ref
    for path in ("/users", "/users/{username}/disable"):
        assert doc["paths"][path]["post"]["responses"]["201" if path == "/users" else "200"]["content"][
            "application/json"]["schema"] == ref
