"""Settings: typed, loaded once from the environment, every key named SHOUWANG_*.

One loader (`load`) serves every settings class: it gathers `PREFIX_FIELD` keys and lets
msgspec convert and check them, so a class states its types and limits (`Annotated[int,
Meta(ge=1)]`, a `Literal`) and never parses a string itself. Its errors name the key, the value
and what is expected, because an operator reads them in a failing unit's log.
"""

from __future__ import annotations

import os
import re
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

import msgspec


class SettingsError(ValueError):
    """A setting has an invalid value; the message names the key."""


Positive = Annotated[int, msgspec.Meta(ge=1)]


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str = "postgresql://postgres@127.0.0.1:5432/shouwang"
    # The owner role's URL, for `shouwang db migrate` only (store/roles.py); unset: database_url.
    database_owner_url: str | None = None
    # One URL, or the servers of a JetStream cluster separated by commas (runtime/natsurl.py).
    nats_url: str = "nats://127.0.0.1:4222"
    # How many servers keep a copy of CARE_UP and CARE_DOWN (service/streams.py): 1 on a single
    # server, 3 on a three-server cluster (deploy/nats/cluster-*.conf), so that losing one loses
    # nothing and stops nothing. `center run --replicas` overrides it.
    nats_replicas: Annotated[int, msgspec.Meta(ge=1, le=5)] = 1
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool | None = None  # None: JSON when stderr is not a terminal
    ingest_batch: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 500
    pool_size: int = 8

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        return load(cls, "SHOUWANG_", env)


S = TypeVar("S", bound=msgspec.Struct)

# How an operator may spell a boolean in an environment file; empty or `auto` means "not set"
# where the field allows None (log_json: decide by the terminal).
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_UNSET = frozenset({"", "auto"})


class _NotABoolean:
    """Stands for a boolean spelled wrong: msgspec refuses it whatever the text (left as text,
    its lax mode would read `null` as None)."""


_AT_FIELD = re.compile(r"- at `\$\.([A-Za-z_]\w*)`")


def load(cls: type[S], prefix: str, env: Mapping[str, str] | None = None) -> S:
    """Build `cls` from the `prefix + FIELD` keys of `env` (default: the process environment);
    absent keys keep the class's defaults. Raises SettingsError naming the first bad key."""
    env = os.environ if env is None else env
    fields = {f.name: f for f in msgspec.structs.fields(cls)}
    raw: dict[str, str] = {}
    values: dict[str, object] = {}
    for name, field in fields.items():
        key = prefix + name.upper()
        if key in env:
            raw[name] = env[key]
            values[name] = _lexical(env[key], field.type)
    try:
        return msgspec.convert(values, cls, strict=False)
    except msgspec.ValidationError as err:
        found = _AT_FIELD.search(str(err))
        if found is None or found.group(1) not in raw:  # not expected: every value comes from one key
            raise SettingsError(f"{prefix}*: {err}") from None
        name = found.group(1)
        key = prefix + name.upper()
        raise SettingsError(_explain(key, raw[name], values[name], fields[name].type)) from None


def _lexical(text: str, tp: Any) -> object:
    """What msgspec should see for an environment string: the boolean spellings above, and no
    surrounding blanks around a number or a boolean (an env file's `KEY= 500` meant 500)."""
    scalars = _scalars(tp)
    if bool in scalars:
        word = text.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        if word in _UNSET and type(None) in scalars:
            return None
        return _NotABoolean()  # refused by msgspec; the message quotes the text as written
    if scalars & {int, float}:
        return text.strip()
    return text


def _explain(key: str, text: str, value: object, tp: Any) -> str:
    literal = next((t for t in _scalars(tp) if typing.get_origin(t) is Literal), None)
    if literal is not None:
        choices = [str(c) for c in typing.get_args(literal)]
        return f"{key}={text!r}: use {', '.join(choices[:-1])} or {choices[-1]}"
    try:
        plain = msgspec.convert(value, _without_limits(tp), strict=False)
    except msgspec.ValidationError:
        return f"{key}={text!r}: {_expected(tp)}"
    return f"{key}={plain}: {_limits(tp)}"  # the right type, outside the limits the class states


def _scalars(tp: Any) -> set[Any]:
    """The types a field accepts, with Annotated limits and unions taken apart."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _scalars(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        return {s for arg in typing.get_args(tp) for s in _scalars(arg)}
    return {tp}


def _without_limits(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _without_limits(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(_without_limits(arg) for arg in typing.get_args(tp))]  # noqa: UP007
    return tp


def _expected(tp: Any) -> str:
    scalars = _scalars(tp)
    if bool in scalars:
        return "expected true or false"
    if int in scalars:
        return "expected a whole number"
    if float in scalars:
        return "expected a number"
    return f"expected {' or '.join(sorted(getattr(s, '__name__', str(s)) for s in scalars))}"


def _limits(tp: Any) -> str:
    metas = [m for m in _annotations(tp) if isinstance(m, msgspec.Meta)]
    low = next((m.ge for m in metas if m.ge is not None), None)
    high = next((m.le for m in metas if m.le is not None), None)
    if low == 1 and high is None:
        return "must be positive"
    if low is not None and high is not None:
        return f"must be {low}..{high}"
    if low is not None:
        return f"must be at least {low}"
    if high is not None:
        return f"must be at most {high}"
    return "out of range"


def _annotations(tp: Any) -> list[object]:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        inner, *extra = typing.get_args(tp)
        return [*extra, *_annotations(inner)]
    if origin in (typing.Union, types.UnionType):
        return [a for arg in typing.get_args(tp) for a in _annotations(arg)]
    return []
