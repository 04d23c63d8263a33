"""Upcasters: turn a payload stored at an older ``schema_version`` into the current shape.

Stored events are never rewritten (history is never rewritten, docs/ARCHITECTURE.md, guarantee 8);
readers upcast on the way out. Each upcaster takes the generic (dict) payload at version N and
returns it at version N+1; :func:`upcast` chains them up to the class's current version.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Payload = dict[str, Any]
_UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}


Step = Callable[[Payload], Payload]


def upcaster(type_name: str, from_version: int) -> Callable[[Step], Step]:
    def register(fn: Step) -> Step:
        _UPCASTERS[(type_name, from_version)] = fn
        return fn

    return register


class UpcastError(ValueError):
    pass


def upcast(type_name: str, version: int, target: int, payload: Payload) -> Payload:
    while version < target:
        step = _UPCASTERS.get((type_name, version))
        if step is None:
            raise UpcastError(f"no upcaster for {type_name} from schema_version {version} to {version + 1}")
        payload = step(dict(payload))
        version += 1
    return payload


@upcaster("AidGiven", 1)
def _aid_yuan_to_fen(p: Payload) -> Payload:
    # v1 (the first station app) recorded whole yuan in `amount_yuan`; money is kept in fen now
    # so that sums are exact.
    yuan = p.pop("amount_yuan", None)
    if isinstance(yuan, bool) or not isinstance(yuan, int):
        raise UpcastError(f"AidGiven v1 amount_yuan must be a whole number of yuan, got {yuan!r}")
    p["amount_fen"] = yuan * 100
    return p
