"""The ranges every route shares, in one place, because two parts keep them: the server refuses
what lies outside (:func:`service.api.app._inputs_in_range`, the parameters' own bounds) and the
OpenAPI document states them (:mod:`service.api.openapi`), so a client's schema-valid request is
never refused for a reason it could not have read.
"""

from __future__ import annotations

# Dates the API accepts: wide enough for any child's life and any record, narrow enough that no
# local-time or interval arithmetic (here, in the projections, in PostgreSQL) can overflow.
MIN_YEAR, MAX_YEAR = 1900, 2199
# Row ids and numeric cursors are PostgreSQL bigint: a 64-bit signed integer.
MAX_ID = 2**63 - 1

_YEAR = r"(19[0-9]{2}|2[01][0-9]{2})"  # MIN_YEAR..MAX_YEAR
DATE_PATTERN = rf"^{_YEAR}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"
DATETIME_PATTERN = rf"^{_YEAR}-"  # with format date-time, which says the rest (a zone included)
PERIOD_PATTERN = rf"^{_YEAR}(-(0[1-9]|1[0-2]|S1|S2|SY))?$"
# A rollup's scope: a site id (region.township.site), a township (region.township) or a region.
SCOPE_PATTERN = r"^[a-z0-9-]{1,24}(\.[a-z0-9-]{1,24}){0,2}$"
