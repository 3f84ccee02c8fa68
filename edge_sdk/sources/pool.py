"""Frame arrays recycled once the pipeline has let go of them.

Why: a fresh multi-megabyte array is fresh pages, and the kernel maps each one on first
touch. Measured on a 2448x2048 Mono8 frame held by the consumer (as a pipeline does):
the copy into new memory took 1.9 ms median and 12 ms p90; into an already mapped
array it is a plain memcpy (about 0.7 ms).

An array is free again when nothing but the pool refers to it (CPython reference count):
a `Frame`, a view or a memoryview still using it keeps it out of reuse, so the pool
never hands out memory someone can still see.
"""

from __future__ import annotations

import sys

import numpy as np

__all__ = ["ArrayPool"]


def _refcounts(arrays: list[np.ndarray]) -> list[int]:
    return [sys.getrefcount(a) for a in arrays]


# What `_refcounts` reports for an array only the pool's list holds. Measured, not assumed:
# interpreters differ in how many temporary references a loop takes.
_FREE = _refcounts([np.empty(0, np.uint8)])[0]


class ArrayPool:
    """Up to `size` uint8 arrays, reused when no one else holds them."""

    def __init__(self, size: int = 8) -> None:
        self._size = size
        self._arrays: list[np.ndarray] = []

    def take(self, shape: tuple[int, ...]) -> np.ndarray:
        """A C-contiguous uint8 array of `shape` that nobody else refers to.

        >>> pool = ArrayPool(2)
        >>> a = pool.take((2, 3)); b = pool.take((2, 3))
        >>> a is b
        False
        >>> del a
        >>> pool.take((2, 3)).shape
        (2, 3)
        """
        for array, refs in zip(self._arrays, _refcounts(self._arrays), strict=True):
            if refs <= _FREE and array.shape == shape:
                return array
        array = np.empty(shape, np.uint8)
        if len(self._arrays) >= self._size:
            # Keep the pool to its size: drop an entry of another shape, or the oldest.
            stale = next((i for i, a in enumerate(self._arrays) if a.shape != shape), 0)
            del self._arrays[stale]
        self._arrays.append(array)
        return array

    def clear(self) -> None:
        """Forget every array (those still in use stay valid for their holders)."""
        self._arrays.clear()
