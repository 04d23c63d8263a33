"""The center's PostgreSQL event store: append once, read in a global order that never skips
(`postgres`), and the database's versioned migrations (`migrate`, `migrations/`).

The center (`service`) writes through it; the read models (`projections`) read through it.
"""
