"""The collective behind SPMD training: one in-place sum of a flat buffer across ranks.

``portable_mlp.spmd`` needs one operation from a communication library: every rank
passes a 1-D array and gets back, in the same memory, the sum of all ranks' arrays.
``Collective`` is that interface; ``TorchCollective`` implements it with
``torch.distributed`` (gloo on CPU, NCCL on CUDA). Another library is one more class
here (``mpi4py``'s ``Allreduce``, or ``jax.distributed`` with a ``psum``) and a name in
``COLLECTIVES``.

Rendezvous goes through Dask: rank 0 opens a ``torch.distributed.TCPStore`` on a port
the OS picks (no bind-then-close race) and publishes ``host:port`` in a
``distributed.Variable``; the other ranks read it from there.
"""

from __future__ import annotations

import datetime
from typing import Any, Protocol

Array = Any


class CollectiveError(RuntimeError):
    """A collective operation failed: a peer died or stopped answering, or the
    rendezvous timed out. The rank's own computation was not at fault."""


class Collective(Protocol):
    """What a rank needs from a communication library."""

    def allreduce_sum(self, buffer: Array) -> None:
        """Replace ``buffer`` (1-D, contiguous) by its sum over every rank, in place."""

    def close(self) -> None:
        """Release the connections, ports and threads the collective holds."""


class TorchCollective:
    """``torch.distributed`` over a ``TCPStore`` rendezvous.

    NumPy arrays enter through ``torch.from_numpy``, others (CuPy, torch) through
    DLPack: no copy, and the sum lands in the caller's array.
    """

    def __init__(self, backend: str, rank: int, world: int, host: str, port: int,
                 timeout: float, publish: Any = None) -> None:
        """Rank 0 (``port`` 0) opens the store on ``host`` and calls ``publish`` with
        its ``host:port``; the other ranks connect to ``host:port``."""
        import torch.distributed as dist

        self._dist = dist
        delta = datetime.timedelta(seconds=timeout)
        try:
            store = dist.TCPStore(host, port, world, rank == 0, timeout=delta,
                                  wait_for_workers=False)
            if rank == 0:
                publish(f"{host}:{store.port}")
            dist.init_process_group(backend, store=store, rank=rank, world_size=world,
                                    timeout=delta)
        except (RuntimeError, TimeoutError, ValueError) as exc:
            raise CollectiveError(f"rank {rank} of {world} could not join the {backend} "
                                  f"process group: {exc}") from exc
        self._store: Any = store  # held: the group's rendezvous lives as long as it

    def allreduce_sum(self, buffer: Array) -> None:
        import numpy as np
        import torch

        tensor = (torch.from_numpy(buffer) if isinstance(buffer, np.ndarray)
                  else torch.from_dlpack(buffer))
        try:
            self._dist.all_reduce(tensor)
        except (RuntimeError, ValueError) as exc:  # gloo: a peer closed or timed out
            raise CollectiveError(f"allreduce failed: {exc}") from exc

    def close(self) -> None:
        """Leave the process group. After a failure its sockets close only once nothing
        refers to them: the caller drops the failed call's traceback, then collects."""
        if self._dist.is_initialized():
            self._dist.destroy_process_group()
        self._store = None


COLLECTIVES = ("gloo", "nccl")  # torch.distributed's backends, by their own names


def check_name(collective: Any) -> str:
    """``collective`` if it names one this module implements (ValueError otherwise)."""
    if collective not in COLLECTIVES:
        raise ValueError(f"unknown collective {collective!r}; expected one of "
                         f"{', '.join(COLLECTIVES)} (gloo on CPU, nccl on CUDA GPUs)")
    return str(collective)


def connect(collective: str, rank: int, world: int, variable: Any, host: str,
            timeout: float) -> Collective:
    """Join the ranks' collective. Rank 0 listens on its ``host`` and sets ``variable``
    (a ``distributed.Variable``) to its ``host:port``; the others read it there."""
    if rank == 0:
        return TorchCollective(collective, 0, world, host, 0, timeout, variable.set)
    try:
        address = variable.get(timeout=timeout)
    except TimeoutError as exc:
        raise CollectiveError(f"rank {rank} waited {timeout:g} s for rank 0 to publish its "
                              "address; rank 0 did not start") from exc
    host, port = address.rsplit(":", 1)
    return TorchCollective(collective, rank, world, host, int(port), timeout)
