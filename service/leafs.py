"""Leaf-node users for township NATS servers connecting to a county hub (deploy/nats/).

A township's leaf node relays for every site of the township, so its user at the hub may send
only the township's events (`care.up.<region>.<township>.>`), create and read only consumers
whose filter is one of the township's `care.down` subjects, and receive only the township's
`care.down` messages and inbox replies. Each site's own, narrower permissions are enforced by the
township's server (its users.conf comes from service.sites, as at the center).

`python -m service.leafs REGION.TOWNSHIP [PASSWORD]` prints the users entry for the hub.
"""

from __future__ import annotations

import secrets
import sys

from events.wire import DOWN_PREFIX, READS_PREFIX, RECEIPT_PREFIX, RELAY_PREFIX, RESTORE_PREFIX, UP_PREFIX
from service.sites import down_consumer_permissions


def leaf_user_name(township: str) -> str:
    return "leaf-" + township.replace(".", "-")


def leaf_user_entry(township: str, password: str) -> str:
    if township.count(".") != 1:
        raise ValueError(f"township must look like REGION.TOWNSHIP (e.g. gx-lp.xy), got {township!r}")
    publish = [f"{UP_PREFIX}{township}.>", f"{RESTORE_PREFIX}{township}.>", f"{READS_PREFIX}{township}.>",
               f"{RECEIPT_PREFIX}{township}.>", f"{RELAY_PREFIX}{township}.>"]
    # The township's sites reach the hub's JetStream through its domain (the leaf has none);
    # the plain $JS.API form is kept for agents not yet configured with --js-domain.
    publish += down_consumer_permissions("*", f"{DOWN_PREFIX}{township}.>")
    subscribe = [f"{DOWN_PREFIX}{township}.>", f"_INBOX.{township}.>"]

    def q(items: list[str]) -> str:
        return ", ".join(f'"{s}"' for s in items)

    return (f'{{ user: "{leaf_user_name(township)}", password: "{password}", permissions: '
            f"{{ publish: {{ allow: [{q(publish)}] }}, subscribe: {{ allow: [{q(subscribe)}] }} }} }}")


def main(argv: list[str]) -> int:
    if not argv or len(argv) > 2:
        print("usage: python -m service.leafs REGION.TOWNSHIP [PASSWORD]", file=sys.stderr)
        return 2
    password = argv[1] if len(argv) == 2 else secrets.token_urlsafe(24)
    try:
        print(leaf_user_entry(argv[0], password))
    except ValueError as err:
        print(f"service.leafs: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
