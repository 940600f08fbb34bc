"""Conveyor's benchmarks (`python -m bench`): each scenario against a bare-Temporal baseline.

See bench/README.md. Nothing here runs at import time: the workflow sandbox re-imports
`bench.baseline` (and so this package) for every workflow run.
"""
