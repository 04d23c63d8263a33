"""Code that runs the project without a deployment, for the demo, the tests and the benchmarks:
PostgreSQL and NATS from their wheels on free ports (`embedded`), a TCP proxy that cuts and
slows a line (`proxy`), a simulated township's care work with its ground truth (`simulation`)
and the demo that drives them all (`demo`, `cli_demo`). No production process imports it.
"""
