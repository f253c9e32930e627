"""One native thread for numeric work in this process.

Measured on the 2-core development machine: with OpenMP (scikit-learn's
gradient boosting) and OpenBLAS (statsmodels) each starting a thread per core
while other processes were busy, a 75-tree fit took 46 s and one predict 1.5 s;
with one thread, about a second and a few milliseconds. Parallelism here comes
from the process pool instead, which the proxy's event loop never waits on.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from functools import lru_cache
from typing import cast

import numpy  # noqa: F401  (loaded so the controller sees its BLAS)
import sklearn.ensemble  # noqa: F401  (loaded so the controller sees its OpenMP)
from threadpoolctl import ThreadpoolController


@lru_cache(maxsize=1)
def _controller() -> ThreadpoolController:
    return ThreadpoolController()


def one_thread() -> AbstractContextManager[object]:
    """Context in which BLAS and OpenMP use a single thread (cheap: ~0.05 ms)."""
    return cast(AbstractContextManager[object], _controller().limit(limits=1))
