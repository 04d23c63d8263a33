"""Fault injection and convergence (issue 10): a Jepsen-style harness for the whole system.

`python -m tests.chaos --minutes N --seed S [--json]` runs a simulated township against
PostgreSQL and NATS it starts itself, injects faults on a schedule drawn from the seed
(tests/chaos/faults.py), throws malformed input at every door (tests/chaos/badinput.py), lets
everything settle and checks that nothing recorded was lost, duplicated or mis-merged
(tests/chaos/checks.py). tests/test_chaos.py runs a short one in CI.
"""
