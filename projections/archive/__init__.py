"""The merged child archive: a pure, order-independent reducer (no I/O).

One module per concept: `state` (a child's set of events), `corrections`, `registers` (field
values and conflicts), `derived` (the archive a person sees), `timeline`, `merges`, `book` (every
state in memory). This package re-exports their public names.

The same code runs at the center (projections.runner) and in a site agent, so both show the
same archive for the same events (guarantee 6).

How convergence holds. A child's *state* (`ChildState`) is only the set of events that concern
it, keyed by event id: `apply` inserts, so applying the same events in any order, any number of
times, gives the same state. Everything a person sees (`ChildArchive`) is *derived* from that set
by `derive`, which first sorts the events by their stamp (recorded_at HLC, site_id, site_seq: a
total order, since (site_id, site_seq) is unique) and never depends on arrival order.

Field values. Each archive field (events.catalogue.ARCHIVE_FIELDS) is a register. An update
*knows* an earlier update of the same field when the earlier one is its `based_on` entry for
that field (transitively), or was recorded earlier at the same site (a site knows its own log).
The *heads* are the updates no other update knows. One head: it is the value. Several heads
that disagree: a conflict; the archive shows the head with the highest stamp (deterministic) and
the conflict stays open until a `ConflictResolved` event, which acts as an update of the field
with the chosen event's value that knows every update recorded before it (by HLC: a site's clock
observes every event it receives, so what the person saw when resolving is stamped earlier).

Corrections. `EventCorrected` never erases: the original stays in the timeline; its effect is
replaced by the correction's `replacement` (same event id for counting, replacement payload and
occurred time) or removed (retraction). When one event is corrected more than once, the
correction with the highest stamp wins. Corrections of corrections are not interpreted.

Merges. `ArchivesMerged` joins the merged child's events to the kept one (`groups`), and
`ArchivesUnmerged` naming that merge undoes it. Several merges are applied in stamp order; one
that would make a cycle or give a child a second parent is ignored.
"""

from projections.archive.book import (
    ArchiveBook,
    build,
    build_states,
    decode_state,
    derive_all,
    encode_state,
)
from projections.archive.corrections import Effective, effective
from projections.archive.derived import (
    CONTACT_TYPES,
    PROXY_KINDS,
    AidItem,
    ArchiveWork,
    ChildArchive,
    MonthWork,
    Pairing,
    RightsCase,
    add_work,
    decode_archive,
    derive,
    derive_full,
    encode_archive,
    encode_parts,
    encode_work,
    month_key,
    view_changed,
)
from projections.archive.merges import MergeEdge, group, merge_edges, roots
from projections.archive.registers import Conflict, FieldSource, field_value
from projections.archive.state import ChildState, Entry, Stamp, apply, entry_of, family_of, keys_of
from projections.archive.timeline import TimelineItem, timeline

__all__ = [
    "CONTACT_TYPES", "PROXY_KINDS", "AidItem", "ArchiveBook", "ArchiveWork", "ChildArchive", "ChildState", "Conflict",
    "Effective", "Entry", "FieldSource", "MergeEdge", "MonthWork", "Pairing", "RightsCase", "Stamp", "TimelineItem",
    "add_work", "apply", "build", "build_states", "decode_archive", "decode_state", "derive", "derive_all",
    "derive_full", "effective", "encode_archive", "encode_parts", "encode_state", "encode_work", "entry_of",
    "family_of", "field_value", "group", "keys_of", "merge_edges", "month_key", "roots", "timeline", "view_changed",
]
