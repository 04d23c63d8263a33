"""What every process of the project needs, whichever side it runs on: structured logging
(`log`), settings from the environment (`settings`), PostgreSQL connections with the codecs the
store relies on (`db`) and the helpers every command shares (`cli`).

It imports none of the project's other packages but `events`; the site agent, the center and
the projections all build on it.
"""
