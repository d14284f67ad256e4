"""``Trainer.step`` per backend x configuration x dtype, beside the GEMM floor and a
hand-written step in the backend's own API (see ``_workloads``).

pytest-benchmark's pedantic mode calls the step K times per round and divides by K;
the K-th call synchronizes with the device (JAX, CuPy, torch CUDA), so a round is
K steps and one sync: no unsynchronized GPU time, and no sync after every step.
Each result's ``extra_info`` carries GFLOP/s (2*m*n*k per matmul of the step), the
matmul precision in force, backend, device, dtype, versions and, for jitted JAX,
the compile time (excluded from the timing).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from benchmarks import _workloads as w

ROWS = list(w.BACKEND_ROWS)
CONFIG_IDS = [f"{name}" for name in w.CONFIGS]
ROUND_S = 0.2  # target seconds per round: a few minutes in all on 2 cores


def _k_for(work: w.Workload, variant: str) -> int:
    w.time_steps(work, variant, 1)  # warm up
    start = time.perf_counter()
    w.time_steps(work, variant, 1)
    once = time.perf_counter() - start
    return max(1, min(10_000, round(ROUND_S / max(once, 1e-7))))


@pytest.mark.parametrize("variant", w.VARIANTS)
@pytest.mark.parametrize("row", ROWS)
@pytest.mark.parametrize("config", CONFIG_IDS)
def test_step(benchmark: Any, workload: w.Workload, row: str, config: str,
              variant: str) -> None:
    cfg = workload.config
    k = _k_for(workload, variant)
    fn, sync, keep = workload.steps[variant], workload.sync, workload.keep_outputs
    outs: list[Any] = []
    count = [0]

    def one_step() -> None:
        out = fn()
        count[0] += 1
        if keep:
            outs.append(out)
        if count[0] % k == 0:  # the K-th step of a round waits for the device
            sync(outs if keep else out)
            outs.clear()

    workload.prepare()
    benchmark.group = f"{config} {cfg.dtype} {'-'.join(map(str, cfg.sizes))} batch {cfg.batch}"
    benchmark.name = f"{row}:{variant}"
    benchmark.pedantic(one_step, rounds=5, iterations=k, warmup_rounds=1)
    per_step = benchmark.stats.stats.median
    benchmark.extra_info.update(workload.info)
    benchmark.extra_info.update(
        variant=variant, steps_per_round=k, seconds_per_step_median=per_step,
        gflops=cfg.flops / per_step / 1e9, compile_s=workload.compile_s.get(variant))
    assert per_step > 0
