"""What crosses NATS between sites and the center: subjects, headers and receipts.

Both sides import these definitions, so the agent and the center cannot drift apart.

Subjects carry the site id, whose dots make region and township tokens of their own, so a
county hub can be given ``care.up.<region>.>`` and a site exactly ``care.up.<its id>``:

* ``care.up.<site_id>``   site -> center: one event per message (JSON, or MessagePack with
  the ``Content-Type`` header), ``Nats-Msg-Id`` = event_id.
* ``care.down.<site_id>`` center -> site: receipts and the committed events of every child in
  the site's scope; the ``Shouwang-Kind`` header says which.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import msgspec

from events.types import SiteId

UP_PREFIX = "care.up."
DOWN_PREFIX = "care.down."
UP_STREAM = "CARE_UP"
DOWN_STREAM = "CARE_DOWN"
# The JetStream domain of the center's NATS server (deploy/nats/center.conf). A site connected
# to the center's server needs nothing of it; a site behind its township's leaf node, which has
# no JetStream of its own, reaches the center's streams as `$JS.<domain>.API...` (agent
# `--js-domain`).
JS_DOMAIN = "shouwang"
KIND_HEADER = "Shouwang-Kind"
KIND_RECEIPT = "receipt"
KIND_EVENT = "event"
# Many fanned-out events in one message (events/batch.py), sent only to a site whose agent said it
# reads them (ReceiptRequest.batches); each entry names the site it is for, as a single message does.
KIND_EVENTS = "events"
CONTENT_TYPE_HEADER = "Content-Type"
MSGPACK = "application/msgpack"


def up_subject(site_id: str) -> str:
    return UP_PREFIX + site_id


def down_subject(site_id: str) -> str:
    return DOWN_PREFIX + site_id


def down_consumer(site_id: str) -> str:
    """Name of the durable pull consumer on CARE_DOWN through which a site reads its
    ``care.down.<site_id>`` (filter_subject exactly that). NATS names cannot hold dots."""
    return "site_" + site_id.replace(".", "_")


def inbox_prefix(site_id: str) -> str:
    """Inbox prefix a site connects with (nats.connect(inbox_prefix=...)): its NATS user may
    subscribe only below it, so no site can read another's fetch replies."""
    return "_INBOX." + site_id


def site_of_subject(subject: str, prefix: str = UP_PREFIX) -> str | None:
    return subject[len(prefix):] if subject.startswith(prefix) else None


SeqRange = Annotated[list[int], msgspec.Meta(min_length=2, max_length=2)]


class Refusal(msgspec.Struct, frozen=True, kw_only=True):
    """An event of this site that the center refused and keeps in quarantine."""

    quarantine_id: int
    reason: str
    event_id: str | None = None
    site_seq: int | None = None
    # Hex sha256 of the bytes the center refused (the event's own bytes, also inside a batch).
    # Anyone holding the site's credentials can send a damaged copy carrying the numbers of one of
    # its events; the agent takes a refusal as its own only when this matches the body it sent.
    # Centers before this field send none: the agent then matches on event_id and site_seq.
    digest: str | None = None


class Receipt(msgspec.Struct, frozen=True, kw_only=True):
    """What the center has committed in PostgreSQL for one site.

    ``watermark``: every site_seq <= watermark is committed; the agent may mark those safe.
    ``holes``: inclusive [first, last] ranges above the watermark that are missing; resend them.
    ``max_seq``: the highest site_seq committed. If ``watermark`` is lower than one the agent
    saw before, the center lost data (restored from a backup): resend from watermark + 1.
    ``refused``: the refusals made by the commit this receipt follows; with ``refused_all`` (the
    answer to a receipt request), every refusal the center still holds (or an admin dismissed) of
    an event of this site it has not stored. The agent then forgets any other refusal it kept:
    one made after the backup a center was restored from is not in the restored quarantine, and
    its event is sent again to be decided afresh, even when the watermark did not go back.
    """

    site_id: SiteId
    watermark: int
    max_seq: int
    holes: list[SeqRange] = []
    refused: list[Refusal] = []
    center_time: dt.datetime | None = None
    refused_all: bool = False


receipt_encoder = msgspec.json.Encoder()
receipt_decoder = msgspec.json.Decoder(Receipt)


def is_own_inbox(site_id: str, reply: str | None) -> bool:
    """Whether a request's reply subject is below the asking site's own inbox prefix. The center
    answers nothing else: NATS does not check reply subjects, so a site could otherwise make the
    center (or JetStream) publish into another site's subject or into a stream."""
    return bool(reply) and reply.startswith(inbox_prefix(site_id) + ".")  # type: ignore[union-attr]


# --- reads at a station, uploaded to the center's read log --------------------------------

READS_PREFIX = "care.reads."


def reads_subject(site_id: str) -> str:
    """Core NATS request subject on which a site sends the reads of children's data its users
    made (offline ones included) to the center's read log; the center answers with what it kept."""
    return READS_PREFIX + site_id


# --- restoring a site's log from the center (a station whose disk died) -------------------

RESTORE_PREFIX = "care.restore."
# Bytes of events per restore reply: well under max_payload (1 MB), and an event is at most 64 KiB.
RESTORE_PAGE_BYTES = 512 * 1024


def restore_subject(site_id: str) -> str:
    """Core NATS request subject on which a site asks the center for its own events (no stream)."""
    return RESTORE_PREFIX + site_id


class RestoreRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Own events from ``from_seq``; or, with ``inbox_after`` (a position ``tx:pos``, ``0:0`` at
    first), the events other sites recorded about the children in this site's scope, after it."""

    from_seq: Annotated[int, msgspec.Meta(ge=1)]
    inbox_after: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,19}:[0-9]{1,19}$")] | None = None


class RestorePage(msgspec.Struct, frozen=True, kw_only=True):
    """The site's own events from ``from_seq`` on, as the center holds them (each the event's
    wire JSON), with the site's progress. ``next_seq`` is where the next page starts, None at
    the end. ``error`` says why the center could not answer (nothing else is set then)."""

    site_id: str
    watermark: int = 0
    max_seq: int = 0
    holes: list[SeqRange] = []
    events: list[msgspec.Raw] = []
    next_seq: int | None = None
    next_after: str | None = None  # inbox pages: where the next one starts, None at the end
    error: str | None = None


restore_request_decoder = msgspec.json.Decoder(RestoreRequest)
restore_page_decoder = msgspec.json.Decoder(RestorePage)


# --- a fresh receipt on request (a station that has just connected) -----------------------

RECEIPT_PREFIX = "care.receipt."


def receipt_subject(site_id: str) -> str:
    """Core NATS request subject on which a site asks the center for a receipt read from its
    store now (no stream; the body, a ``ReceiptRequest``, reports the site's backlog). The agent
    asks on every connection, so a receipt it kept from before a center's restore never counts
    as "synced" (guarantee 2); the center answers only below the asking site's own inbox
    (``is_own_inbox``)."""
    return RECEIPT_PREFIX + site_id


DictId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")]


class ReceiptRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a site says of itself when it asks for a fresh receipt (the body may be empty, as
    older agents send it): how many of its own events it still holds unreceipted, and, from
    agents that read batches on the way down (events/batch.py), the dictionaries they have
    (an empty list: batches without a dictionary). None: one event per message, as before."""

    pending: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)] | None = None
    batches: Annotated[list[DictId], msgspec.Meta(max_length=32)] | None = None


class DownEntry(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One event of a ``KIND_EVENTS`` batch on care.down: ``id`` is what the event's own message
    would carry as its Nats-Msg-Id (``<event id>@<site>``, ``#<digest>`` for a redacted copy),
    ``event`` the copy as the fan-out cut it for that site, ``original_hash`` set for a redacted
    copy (as ``Shouwang-Original-Hash`` is on a message of its own), ``seal`` the center's seal of a
whole copy (``Shouwang-Seal``, service/seals.py)."""

    id: Annotated[str, msgspec.Meta(max_length=200)]
    event: msgspec.Raw
    original_hash: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")] | None = None
    seal: Annotated[str, msgspec.Meta(max_length=200)] | None = None  # Shouwang-Seal of a whole copy


down_entry_encoder = msgspec.json.Encoder()
down_entry_decoder = msgspec.json.Decoder(DownEntry)


receipt_request_encoder = msgspec.json.Encoder()
receipt_request_decoder = msgspec.json.Decoder(ReceiptRequest)


class ReceiptReply(msgspec.Struct, frozen=True, kw_only=True):
    """The answer on ``care.receipt.<site>``: the site's receipt as committed when the center
    read it, or ``error`` saying why it could not read it (the agent asks again later)."""

    receipt: Receipt | None = None
    error: str | None = None


receipt_reply_encoder = msgspec.json.Encoder()
receipt_reply_decoder = msgspec.json.Decoder(ReceiptReply)


# --- the township office relays what a restored center lacks ------------------------------

RELAY_PREFIX = "care.relay."
# On a fan-out copy that is the event as its site sealed it (never on a redacted copy): the
# center's HMAC of the event's hash with its relay key (service/seals.py). Only the center can
# make one; a township office keeps it with its copy and hands it back when it relays the event.
SEAL_HEADER = "Shouwang-Seal"
RELAY_PAGE_BYTES = 512 * 1024  # bytes of events per relay request, as for restore pages


def relay_subject(site_id: str) -> str:
    """Core NATS request subject on which a township office asks the center what it holds of
    the township's sites, and hands it the sealed copies of their events it lacks."""
    return RELAY_PREFIX + site_id


class RelayRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """No events: "what do you hold of my township's sites?". Events (each the wire JSON the
    fan-out sent) with their seals, one for one: "take these copies back"."""

    events: list[msgspec.Raw] = []
    seals: list[str] = []


class SiteProgress(msgspec.Struct, frozen=True, kw_only=True):
    """What the center holds of one site: as a receipt says it."""

    site_id: str
    watermark: int
    max_seq: int
    holes: list[SeqRange] = []


class RelayRefusal(msgspec.Struct, frozen=True, kw_only=True):
    """A relayed copy the center did not take (``index``: its place in the request), and why."""

    index: int
    reason: str
    # Refused for its seal alone (not this center's key): offered again once the center's key
    # changes (an operator who restored the center with another key and then found the right one).
    seal: bool = False


class RelayReply(msgspec.Struct, frozen=True, kw_only=True):
    """The answer on ``care.relay.<office>``: the township's sites' progress (to a question), or
    what became of the copies offered; ``error`` when the center could not answer."""

    progress: list[SiteProgress] = []
    stored: int = 0
    duplicates: int = 0
    refused: list[RelayRefusal] = []
    # The center has no relay key (SHOUWANG_RELAY_KEY): it makes no seals and takes no copies.
    no_key: bool = False
    key_id: str | None = None  # which key the center checks seals with (a digest, never the key)
    error: str | None = None


relay_request_encoder = msgspec.json.Encoder()
relay_request_decoder = msgspec.json.Decoder(RelayRequest)
relay_reply_encoder = msgspec.json.Encoder()
relay_reply_decoder = msgspec.json.Decoder(RelayReply)
