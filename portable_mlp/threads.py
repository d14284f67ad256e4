"""Threads for one call: torch's and the BLAS libraries' pools, limited and put back.

PyTorch and the BLAS library under NumPy start one thread per core. Where the cores are
busy with other work, those threads wait for each other at every operation and a small
network trains several times slower (docs/guide/threads.md has the figures). ``threads=``
on ``fit``, ``Trainer`` and the scikit-learn estimators limits them for that call only,
with threadpoolctl and ``torch.set_num_threads``, and puts them back after: the library
never changes a global setting for good.

Where ``threads`` is not given and the pools would run more threads than the machine has
idle cores, the first fit of the process warns (``ThreadOversubscriptionWarning``) with
that advice, once.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import warnings
from collections.abc import Iterator

from portable_mlp import backends

ADVICE = ("on a busy machine fewer threads are faster: pass threads=1 to fit, Trainer or the "
          "estimator (a newcomer's 5-fold cross-validation on torch took 74-93 s with the "
          "default threads, against 1-4 s for NumPy; figures in docs/guide/threads.md)")

_warned = False  # the oversubscription warning is given once per process


class ThreadOversubscriptionWarning(UserWarning):
    """torch or the BLAS library would run more threads than the machine has idle cores."""


def check_threads(threads: object) -> int | None:
    """``threads`` checked: None (the libraries' own settings) or a positive int.

    Parameters
    ----------
    threads : int or None
        The thread count to check.

    Returns
    -------
    int or None
        ``threads`` as an int, or None.
    """
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
        raise ValueError(f"threads must be None or a positive int, got {threads!r}")
    return int(threads)


@contextlib.contextmanager
def limited(threads: int | None) -> Iterator[None]:
    """Limit torch's threads (where torch is imported) and the BLAS libraries' (threadpoolctl)
    to ``threads`` inside the ``with`` block, and put both back after it.

    Parameters
    ----------
    threads : int or None
        The most threads each pool may run; None leaves them as they are, and warns once
        per process (``ThreadOversubscriptionWarning``) where they outnumber the idle cores.
    """
    threads = check_threads(threads)
    if threads is None:
        warn_if_oversubscribed()
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads), _library_threads(threads):
        yield


@contextlib.contextmanager
def _library_threads(threads: int) -> Iterator[None]:
    """Each imported backend's own pool (torch's) limited; a library is never imported here,
    so only a pool that exists is set."""
    with contextlib.ExitStack() as stack:
        for backend in backends.imported():
            stack.enter_context(backend.threads(threads))
        yield


def idle_cores() -> float | None:
    """The cores not busy with other work: CPU count less the 1-minute load average (None
    where the platform has no load average)."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows
        return None
    return max((os.cpu_count() or 1) - load, 0.0)


def pool_threads() -> int:
    """The most threads an imported library's pool (torch's) or a BLAS library would run now."""
    counts = [backend.thread_count() for backend in backends.imported()] + [1]
    from threadpoolctl import threadpool_info

    counts += [int(pool.get("num_threads", 1)) for pool in threadpool_info()]
    return max(counts)


def warn_if_oversubscribed() -> None:
    """Warn once per process when the pools run more threads than there are idle cores
    (and more than one)."""
    global _warned
    if _warned:
        return
    _warned = True
    idle = idle_cores()
    if idle is None:
        return
    pool = pool_threads()
    if pool > 1 and pool > idle:
        warnings.warn(f"torch or the BLAS library runs {pool} threads, but about {idle:.1f} "
                      f"of {os.cpu_count()} cores are idle; {ADVICE}",
                      ThreadOversubscriptionWarning, stacklevel=5)
