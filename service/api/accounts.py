"""Routes for logging in and out, and the admin's user management."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.params import JSONBody, Parameter

from service.api import auth
from service.api.errors import ApiError
from service.api.scoping import allow, caller_of

UsernameField = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._@-]{1,64}$", examples=["zhang.v03"],
                                            description="login name")]
Password = Annotated[str, msgspec.Meta(min_length=1, max_length=256, description="password",
                                       examples=["correct horse battery"])]


class LoginRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    username: UsernameField
    password: Password


class TokenOut(msgspec.Struct, frozen=True):
    """A bearer token, shown once: send it as 'Authorization: Bearer <token>'."""

    token: str
    token_id: str
    username: str
    expires_at: dt.datetime


class Me(msgspec.Struct, frozen=True):
    username: str
    role: str
    site_id: str | None
    township: str | None
    token_id: str


class NewUser(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    username: UsernameField
    role: Annotated[str, msgspec.Meta(pattern=r"^(station|school|township|auditor|admin)$",
                                      description="station, school, township, auditor or admin")]
    password: Annotated[str, msgspec.Meta(min_length=10, max_length=256)]
    site_id: Annotated[str, msgspec.Meta(max_length=74, examples=["gx-lp.xy.v03"])] | None = None
    township: Annotated[str, msgspec.Meta(max_length=49, examples=["gx-lp.xy"])] | None = None
    display_name: Annotated[str, msgspec.Meta(max_length=40)] = ""


class UserOut(auth.User, frozen=True):
    # auth.User as the API answers it: the same fields, under the schema name the OpenAPI
    # document has always used (litestar names a component after its class).
    pass


class UserList(msgspec.Struct, frozen=True):
    items: list[UserOut]


def _user_out(u: auth.User) -> UserOut:
    return UserOut(**msgspec.structs.asdict(u))


class Revoked(msgspec.Struct, frozen=True):
    token_id: str
    revoked: bool


class AuthController(Controller):
    path = "/auth"
    tags = ["auth"]  # noqa: RUF012 (litestar reads controller options from class attributes)

    @post("/token", exclude_from_auth=True, status_code=201, summary="Log in: a token for a user name and password",
          description="Repeated failures lock the client address for a while, and many failures of one user name "
                      "pause that name briefly, known or not (429 with Retry-After).")
    async def login(self, request: Request[Any, Any, Any], data: JSONBody[LoginRequest]) -> TokenOut:
        s = request.app.state.api_settings
        try:
            issued = await auth.login(request.app.state.pool, data.username, data.password, hours=s.token_hours,
                                      throttle=request.app.state.throttle, address=auth.client_address(
                                          request.scope, request.app.state.trusted_proxies))
        except auth.LoginRefused as err:
            if err.retry_after is not None:
                raise ApiError(429, str(err), field="username", value=data.username,
                               headers={"Retry-After": str(err.retry_after)}) from None
            raise ApiError(401, str(err), field="password") from None
        return TokenOut(**msgspec.structs.asdict(issued))

    @get("/me", summary="Who this token belongs to")
    async def me(self, request: Request[Any, Any, Any]) -> Me:
        c = caller_of(request)
        return Me(username=c.username, role=c.role, site_id=c.site_id, township=c.township, token_id=c.token_id)

    @delete("/token", status_code=200, summary="Log out: revoke the token of this request")
    async def logout(self, request: Request[Any, Any, Any]) -> Revoked:
        c = caller_of(request)
        done = await auth.revoke_token(request.app.state.pool, c.token_id, username=c.username)
        return Revoked(token_id=c.token_id, revoked=done)

    @delete("/tokens/{token_id:str}", status_code=200, summary="Revoke one of your own tokens (admin: anyone's)")
    async def revoke(self, request: Request[Any, Any, Any],
                     token_id: Annotated[str, Parameter(pattern=r"^[0-9a-f-]{36}$", description="token id")]
                     ) -> Revoked:
        c = caller_of(request)
        try:
            done = await auth.revoke_token(request.app.state.pool, token_id,
                                           username=None if c.role == "admin" else c.username)
        except auth.AuthError as err:
            raise ApiError(400, str(err), field="token_id", value=token_id) from None
        if not done:
            raise ApiError(404, f"no live token {token_id} of yours", field="token_id", value=token_id)
        return Revoked(token_id=token_id, revoked=True)


class UsersController(Controller):
    path = "/users"
    tags = ["users"]  # noqa: RUF012 (litestar reads controller options from class attributes)
    guards = [allow("admin")]  # noqa: RUF012 (as above)

    @get("/", summary="Every user")
    async def list_users(self, request: Request[Any, Any, Any]) -> UserList:
        return UserList(items=[_user_out(u) for u in await auth.list_users(request.app.state.pool)])

    @post("/", status_code=201, summary="Add a user",
          description="Station, school and township users name their registered site; an auditor names a township.")
    async def add(self, request: Request[Any, Any, Any], data: JSONBody[NewUser]) -> UserOut:
        try:
            u = await auth.add_user(request.app.state.pool, data.username, data.role, data.password,
                                    site_id=data.site_id, township=data.township, display_name=data.display_name)
        except auth.AuthError as err:
            status = 409 if "exists already" in str(err) else 400
            raise ApiError(status, str(err), field="username" if status == 409 else "role",
                           value=data.username if status == 409 else data.role) from None
        return _user_out(u)

    @post("/{username:str}/disable", status_code=200, summary="Disable a user; their tokens stop working")
    async def disable(self, request: Request[Any, Any, Any],
                      username: Annotated[str, Parameter(pattern=r"^[A-Za-z0-9._@-]{1,64}$")]) -> UserOut:
        try:
            return _user_out(await auth.disable_user(request.app.state.pool, username))
        except auth.AuthError as err:
            raise ApiError(404, str(err), field="username", value=username) from None


