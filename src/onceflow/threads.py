"""Thread pools sized to the work: numpy/scipy's BLAS, OpenMP (torch's, sklearn's) and torch.

Why: a pool's fork-join only pays when every worker gets a core. On a shared machine (CI
runners, Prefect workers beside other jobs) a small batch split over two BLAS threads waits for
a worker the scheduler has not run yet: the MLP predictor's 25-row predict went from 0.07 ms
to 1-14 ms per call, and the whole search ~10x slower, while one CPU-bound neighbour ran per
core. The search and the predictor fit work on small batches (tens to hundreds of rows), so
they run at one thread; a stage caps every pool at ``base.threads`` once (:func:`set_threads`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from threadpoolctl import ThreadpoolController

# Read by BLAS and OpenMP libraries when they load: pools of libraries first loaded later (scipy's
# OpenBLAS arrives with pymoo's first import) get the limit too.
_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _torch():  # noqa: ANN202 (torch only when the caller already imported it: no import cost)
    return sys.modules.get("torch")


def set_threads(n: int) -> None:
    """Cap torch's intra-op pool and every loaded BLAS and OpenMP pool at ``n`` threads for the
    rest of the process (a stage calls this once with ``base.threads``)."""
    os.environ.update({k: str(n) for k in _ENV})
    ThreadpoolController().limit(limits=n)
    torch = _torch()
    if torch is not None:
        torch.set_num_threads(n)


@contextmanager
def limit_threads(n: int) -> Iterator[None]:
    """Run the block with torch, BLAS and OpenMP at (at most) ``n`` threads; restores the
    previous sizes after (a library first loaded inside the block keeps ``n``). Costs ~10 ms:
    wrap loops, not single calls."""
    torch = _torch()
    before = torch.get_num_threads() if torch is not None else None
    env = {k: os.environ.get(k) for k in _ENV}
    with ThreadpoolController().limit(limits=n):
        os.environ.update({k: str(n) for k in _ENV})
        if torch is not None:
            torch.set_num_threads(n)
        try:
            yield
        finally:
            for k, v in env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            if torch is not None and before is not None:
                torch.set_num_threads(before)


def pool_sizes() -> dict[str, int]:
    """Threads each loaded pool would use now: ``blas``/``openmp`` (the largest over loaded
    libraries of that kind) and ``torch``."""
    out: dict[str, int] = {}
    for lib in ThreadpoolController().info():
        api = lib["user_api"]
        out[api] = max(out.get(api, 0), int(lib["num_threads"]))
    torch = _torch()
    if torch is not None:
        out["torch"] = torch.get_num_threads()
    return out
