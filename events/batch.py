"""Many events in one NATS message, compressed: what a village line can afford.

A station pays for its mobile data, and one event per message costs its headers, its subject and
its JetStream acknowledgement each time, uncompressed (bench/link.py measured 13.8x the
compressed floor going up). A **batch** is one message carrying a JSON array of events, each
exactly as the site sealed it (its hash covers its own bytes, never the batch's), compressed as
one zstd frame, with a dictionary trained on made-up care events (``events/dictionaries/``,
built by ``tools/train_dictionary.py``) so that even a batch of two or three events compresses
well. Headers say how to read it:

* ``Content-Type: application/vnd.shouwang.batch+zstd``
* ``Shouwang-Dict: <dictionary id>`` (absent: no dictionary). The id names a file shipped with
  the code, so the dictionary can change later: a center keeps every id it ever shipped, and a
  batch naming an id this code does not have is refused with that id named.
* ``Nats-Msg-Id``: derived from the ids of the events it carries (:func:`batch_msg_id`), so the
  same events sent again are the same message to JetStream's duplicate window, and a batch with
  other events (or, on the way down, other children) is another message.

Receivers treat each event of a batch as if it had come alone: the center triages, authorizes,
stores or quarantines each on its own (a batch refused in part keeps its good events), and the
agent keeps each by event id. A batch that cannot be read at all is refused whole, with the
reason naming what was wrong. Limits guard the receiver: :data:`MAX_BATCH_EVENTS` events and
:data:`MAX_BATCH_BYTES` once decompressed, checked against the size the frame declares before
decompressing (a small frame that would inflate beyond the limit is refused unread).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import msgspec
import zstandard

BATCH_CONTENT_TYPE = "application/vnd.shouwang.batch+zstd"
DICT_HEADER = "Shouwang-Dict"
DICTIONARY_ID = "care-1"  # the dictionary this code compresses with
DICTIONARIES = Path(__file__).parent / "dictionaries"
MAX_BATCH_EVENTS = 2000
MAX_BATCH_BYTES = 4 * 1024 * 1024  # decompressed; a message itself stays under NATS's 1 MB
LEVEL = 12  # zstd level: a batch is small; the line, not the CPU, is what is scarce

_raw_list = msgspec.json.Decoder(list[msgspec.Raw])


class BatchError(ValueError):
    """A batch message that cannot be read; the message names the header or field and value."""


@functools.cache
def dictionary(dict_id: str) -> zstandard.ZstdCompressionDict:
    """The shipped dictionary named `dict_id` (a file ``events/dictionaries/<id>.zdict``)."""
    if not dict_id or "/" in dict_id or "\\" in dict_id or dict_id.startswith(".") or len(dict_id) > 40:
        raise BatchError(f"header {DICT_HEADER}: {dict_id[:60]!r} is not a dictionary id")
    path = DICTIONARIES / f"{dict_id}.zdict"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BatchError(f"header {DICT_HEADER}: dictionary {dict_id!r} is not known to this program "
                         "(a newer sender? upgrade this side)") from None
    return zstandard.ZstdCompressionDict(data)


@functools.cache
def _compressor(dict_id: str | None) -> zstandard.ZstdCompressor:
    return zstandard.ZstdCompressor(level=LEVEL, dict_data=dictionary(dict_id) if dict_id else None,
                                    write_checksum=True)


def readable() -> list[str]:
    """The ids of the dictionaries this program ships (it reads batches made with any of them)."""
    return sorted(p.stem for p in DICTIONARIES.glob("*.zdict"))


def is_batch(headers: dict[str, str] | None) -> bool:
    return bool(headers) and headers.get("Content-Type") == BATCH_CONTENT_TYPE  # type: ignore[union-attr]


def pack(items: Sequence[bytes], dict_id: str | None = DICTIONARY_ID) -> tuple[bytes, dict[str, str]]:
    """One batch message: the body and the headers (without a Nats-Msg-Id) carrying `items`, each
    a JSON value (an event as sealed, or an entry of the way down)."""
    if not items:
        raise ValueError("an empty batch")
    body = _compressor(dict_id).compress(b"[" + b",".join(items) + b"]")
    headers = {"Content-Type": BATCH_CONTENT_TYPE}
    if dict_id:
        headers[DICT_HEADER] = dict_id
    return body, headers


def unpack(data: bytes, headers: dict[str, str] | None) -> list[bytes]:
    """The items of a batch message, each as the exact bytes it was packed from. Raises
    BatchError naming what is wrong: an unknown dictionary, a frame that is not zstd or is
    damaged, more than the limits, not a JSON array."""
    dict_id = (headers or {}).get(DICT_HEADER)
    dec = zstandard.ZstdDecompressor(dict_data=dictionary(dict_id) if dict_id else None)
    try:
        size = zstandard.frame_content_size(data)
        if size < 0:
            raise BatchError("body: the zstd frame does not declare its size (compress with the size written)")
        if size > MAX_BATCH_BYTES:
            # checked before decompressing: a small frame must not make the receiver hold a huge one
            raise BatchError(f"body: decompresses to {size} bytes, the limit of a batch is {MAX_BATCH_BYTES}")
        raw = dec.decompress(data)
    except zstandard.ZstdError as err:
        raise BatchError(f"body: not a readable zstd frame ({err}; {len(data)} bytes, "
                         + (f"dictionary {dict_id})" if dict_id else "no dictionary)")) from None
    try:
        items = _raw_list.decode(raw)
    except msgspec.DecodeError as err:
        raise BatchError(f"body: not a JSON array of events ({err})") from None
    if not items:
        raise BatchError("body: an empty batch")
    if len(items) > MAX_BATCH_EVENTS:
        raise BatchError(f"body: {len(items)} events in one batch, the limit is {MAX_BATCH_EVENTS}")
    return [bytes(i) for i in items]


def batch_msg_id(ids: Iterable[str], prefix: str = "batch") -> str:
    """A Nats-Msg-Id for a batch carrying these (event or entry) ids, in order."""
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:32]
    return f"{prefix}:{digest}"
