"""The center's HTTP API (litestar): access by role and site, the read log, writes as events.

Grouped by context: `auth` (people, passwords, tokens), `scoping` (who sees which child, as
SQL), `audit` (the read log and chain checks), one module per resource (`children`,
`followups`, `rollups`, `sites`, `conflicts`, `quarantine`, `exports`, `health`), `writes`
(the township office's own site log) and `app` (`create_app`).
"""
