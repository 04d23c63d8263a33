"""Benchmarks: each figure measured beside its ceiling or a peer in the same run, as a ratio."""
