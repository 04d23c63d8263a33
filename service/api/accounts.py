"""Routes for logging in and out, passwords, and the admin's user management.

Admins (``/users``) list, add, disable, enable users and reset a password with a one-time code;
everyone changes their own password (``POST /auth/password``); a person with a one-time code sets
their password without a token (``POST /auth/password/code``); admins and auditors read the log of
account actions (``GET /account-log``). service.api.auth does the work and writes the log.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.openapi.spec import Example
from litestar.params import JSONBody, Parameter

from service.api import auth
from service.api.errors import ApiError
from service.api.limits import MAX_ID
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
    region: str | None = None  # a county user's region


NewPassword = Annotated[str, msgspec.Meta(min_length=10, max_length=256, examples=["a long made-up passphrase"],
                                          description="the new password: " + auth.PASSWORD_RULE)]
CodeField = Annotated[str, msgspec.Meta(min_length=1, max_length=64, examples=["ABCDE-FGHJK-MNPQR-STVWX"],
                                        description="the one-time code an admin issued")]


class NewUser(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    username: UsernameField
    role: Annotated[str, msgspec.Meta(pattern=r"^(station|school|township|auditor|admin|county)$",
                                      description="station, school, township, auditor, admin or county")]
    password: Annotated[str, msgspec.Meta(min_length=10, max_length=256, description=(
        "omit it to add the user without a password, then issue a one-time code "
        "(POST /users/{username}/reset)"))] | None = None
    site_id: Annotated[str, msgspec.Meta(max_length=74, examples=["gx-lp.xy.v03"])] | None = None
    township: Annotated[str, msgspec.Meta(max_length=49, examples=["gx-lp.xy"])] | None = None
    display_name: Annotated[str, msgspec.Meta(max_length=40)] = ""
    region: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9-]{1,24}$", examples=["gx-lp"],
                                        description="a county user's region: the first part of its site ids")
                      ] | None = None


class UserOut(auth.User, frozen=True):
    # auth.User as the API answers it: the same fields, under the schema name the OpenAPI
    # document has always used (litestar names a component after its class).
    pass


class UserList(msgspec.Struct, frozen=True):
    items: list[UserOut]


def _user_out(u: auth.User) -> UserOut:
    return UserOut(**msgspec.structs.asdict(u))


class OneTimeCodeOut(msgspec.Struct, frozen=True):
    """A one-time code, shown once: the person sets their own password with it (it is kept only as a hash)."""

    username: str
    code: str
    expires_at: dt.datetime


class ChangePassword(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    old_password: Password
    new_password: NewPassword


class CodePassword(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    code: CodeField
    new_password: NewPassword


class PasswordSet(msgspec.Struct, frozen=True):
    username: str
    password_set: bool


class AccountLogEntry(msgspec.Struct, frozen=True):
    """Who (actor) did what (action) to whom (target), when; never a password or a code."""

    id: int
    at: dt.datetime
    actor: str
    action: Annotated[str, msgspec.Meta(examples=["code_issued"], description=", ".join(auth.ACTIONS))]
    target: str
    detail: str


class AccountLog(msgspec.Struct, frozen=True):
    items: list[AccountLogEntry]


UsernamePath = Annotated[str, Parameter(pattern=r"^[A-Za-z0-9._@-]{1,64}$", description="login name",
                                        examples=[Example(value="zhang.v03")])]


# Rules that JSON Schema cannot state (the routes' 422 answers, docs/API.md).
PASSWORD_RULES = [f"a new password has {auth.PASSWORD_RULE}", "a new password is not the current one",
                  "old_password is your current password"]
USER_RULES = ["station, school and township users name an active registered site of their kind (site_id); an "
              "auditor names a township (township); a county user names a region (region); an admin names none",
              f"a password, if given, has {auth.PASSWORD_RULE}"]
TOKEN_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
RESET_RULES = ["an admin resets other users' passwords only (your own: POST /auth/password)"]


def _field_error(err: auth.FieldError, value: str | None = None) -> ApiError:
    """An unknown one-time code is a 401 (a credential that does not hold, as at log-in, on a route
    without a token); a wrong current password (the token holds: a 401 would read as "log in again")
    and a password that breaks the strength rule are a 422 (PASSWORD_RULES)."""
    status = 401 if err.field == "code" else 422
    return ApiError(status, str(err), field=err.field, value=value)


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
            if isinstance(err, auth.CodeGiven):
                raise ApiError(403, str(err), code="one_time_code", field="password") from None
            raise ApiError(401, str(err), field="password") from None
        return TokenOut(**msgspec.structs.asdict(issued))

    @post("/password", status_code=200, summary="Change your own password (the old one, then the new)",
          description="The new password must have " + auth.PASSWORD_RULE + ". Your other tokens are revoked; "
                      "this one keeps working.", opt={"rules": PASSWORD_RULES})
    async def change_password(self, request: Request[Any, Any, Any], data: JSONBody[ChangePassword]) -> PasswordSet:
        c = caller_of(request)
        try:
            await auth.change_password(request.app.state.pool, c.username, data.old_password, data.new_password,
                                       keep_token_id=c.token_id)
        except auth.FieldError as err:
            raise _field_error(err) from None
        return PasswordSet(username=c.username, password_set=True)

    @post("/password/code", exclude_from_auth=True, status_code=200,
          summary="Set your password with a one-time code an admin issued (no token needed)",
          description="The code is used up; then log in with POST /auth/token. The new password must have "
                      + auth.PASSWORD_RULE + ". A code that is unknown, used or expired is a 401.",
          opt={"rules": PASSWORD_RULES[:1]})
    async def set_with_code(self, request: Request[Any, Any, Any], data: JSONBody[CodePassword]) -> PasswordSet:
        try:
            username = await auth.set_password_with_code(request.app.state.pool, data.code, data.new_password)
        except auth.FieldError as err:
            raise _field_error(err) from None
        return PasswordSet(username=username, password_set=True)

    @get("/me", summary="Who this token belongs to")
    async def me(self, request: Request[Any, Any, Any]) -> Me:
        c = caller_of(request)
        return Me(username=c.username, role=c.role, site_id=c.site_id, township=c.township, token_id=c.token_id,
                  region=c.region)

    @delete("/token", status_code=200, summary="Log out: revoke the token of this request")
    async def logout(self, request: Request[Any, Any, Any]) -> Revoked:
        c = caller_of(request)
        done = await auth.revoke_token(request.app.state.pool, c.token_id, username=c.username)
        return Revoked(token_id=c.token_id, revoked=done)

    @delete("/tokens/{token_id:str}", status_code=200, summary="Revoke one of your own tokens (admin: anyone's)")
    async def revoke(self, request: Request[Any, Any, Any],
                     token_id: Annotated[str, Parameter(pattern=TOKEN_ID_PATTERN, description="token id (a UUID)")]
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
          description="Station, school and township users name their registered site; an auditor names a township; "
                      "a county user names a region.", opt={"rules": USER_RULES})
    async def add(self, request: Request[Any, Any, Any], data: JSONBody[NewUser]) -> UserOut:
        try:
            u = await auth.add_user(request.app.state.pool, data.username, data.role, data.password,
                                    site_id=data.site_id, township=data.township, display_name=data.display_name,
                                    actor=caller_of(request).username, region=data.region)
        except auth.AuthError as err:
            message = str(err)
            if "exists already" in message:
                raise ApiError(409, message, field="username", value=data.username) from None
            if "password" in message:
                raise ApiError(422, message, field="password") from None
            if "--region" in message:
                raise ApiError(422, message, field="region", value=data.region) from None
            if "--site" in message or "site " in message:
                raise ApiError(422, message, field="site_id", value=data.site_id) from None
            if "--township" in message:
                raise ApiError(422, message, field="township", value=data.township) from None
            raise ApiError(422, message, field="role", value=data.role) from None
        return _user_out(u)

    @post("/{username:str}/disable", status_code=200, summary="Disable a user; their tokens stop working")
    async def disable(self, request: Request[Any, Any, Any], username: UsernamePath) -> UserOut:
        try:
            return _user_out(await auth.disable_user(request.app.state.pool, username,
                                                     actor=caller_of(request).username))
        except auth.AuthError as err:
            raise ApiError(404, str(err), field="username", value=username) from None

    @post("/{username:str}/enable", status_code=200, summary="Enable a disabled user again")
    async def enable(self, request: Request[Any, Any, Any], username: UsernamePath) -> UserOut:
        try:
            return _user_out(await auth.enable_user(request.app.state.pool, username,
                                                    actor=caller_of(request).username))
        except auth.AuthError as err:
            raise ApiError(404, str(err), field="username", value=username) from None

    @post("/{username:str}/reset", status_code=201, summary="Reset a password: a one-time code, shown once",
          description="The old password stops working and the user's tokens are revoked; the person sets their "
                      "own password with the code (POST /auth/password/code, the dashboard's /ui/password?code=..., "
                      "or by typing it at the log-in form). Your own password you change with POST /auth/password.",
          opt={"rules": RESET_RULES})
    async def reset(self, request: Request[Any, Any, Any], username: UsernamePath,
                    hours: Annotated[float, Parameter(gt=0, le=720, description="how long the code lasts",
                                                      examples=[Example(value=72)])] = auth.CODE_HOURS
                    ) -> OneTimeCodeOut:
        c = caller_of(request)
        if username == c.username:
            raise ApiError(422, "change your own password with POST /auth/password (an admin resets only "
                           "other users')", field="username", value=username)
        try:
            out = await auth.issue_code(request.app.state.pool, username, actor=c.username, hours=hours)
        except auth.AuthError as err:
            raise ApiError(404, str(err), field="username", value=username) from None
        return OneTimeCodeOut(**msgspec.structs.asdict(out))


class AccountLogController(Controller):
    path = "/account-log"
    tags = ["users"]  # noqa: RUF012 (litestar reads controller options from class attributes)
    guards = [allow("admin", "auditor")]  # noqa: RUF012 (as above)

    @get("/", summary="The log of account actions: who added, disabled, enabled or reset whom, and password "
                      "changes; newest first")
    async def account_log(self, request: Request[Any, Any, Any],
                          limit: Annotated[int, Parameter(ge=1, le=1000, examples=[Example(value=200)])] = 200,
                          before: Annotated[int | None, Parameter(ge=1, le=MAX_ID, description=(
                              "only entries older than this id (paging)"), examples=[Example(value=1000)])] = None
                          ) -> AccountLog:
        rows = await auth.user_log(request.app.state.pool, limit=limit, before=before)
        return AccountLog(items=[AccountLogEntry(**msgspec.structs.asdict(r)) for r in rows])


