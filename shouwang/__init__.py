"""The `shouwang` command: the one entry point that wires every package's subcommands together.

It sits above every other package (see docs/ARCHITECTURE.md): the center's commands come from
`service`, the agent's from `sync_agent`, the read models' from `projections`, the demo's from
`testbed`. Nothing imports this package.
"""
