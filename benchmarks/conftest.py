"""Benchmarks of one training step: pytest-benchmark, outside the default test paths.

    pytest benchmarks --benchmark-only                       # everything available here
    pytest benchmarks --benchmark-only -k "numpy and wide"   # a slice
    nox -s bench                                             # the same, JSON kept

Workloads are built once per (backend row, configuration) and shared by the
floor / hand / portable_mlp variants (JAX compiles once).
"""

from __future__ import annotations

import pytest

from benchmarks import _workloads as w

_CACHE: dict[tuple[str, str], w.Workload | str] = {}


@pytest.fixture
def workload(row: str, config: str) -> w.Workload:
    key = (row, config)
    if key not in _CACHE:
        try:
            _CACHE.clear()  # one workload alive at a time: memory, and no stale threads
            _CACHE[key] = w.build(row, w.CONFIGS[config])
        except w.UnavailableError as exc:
            _CACHE[key] = str(exc)
    work = _CACHE[key]
    if isinstance(work, str):
        pytest.skip(work)
    return work
