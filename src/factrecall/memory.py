"""Giving freed host memory back to the operating system during long tensor-by-tensor passes.

glibc's malloc keeps freed blocks under its mmap threshold (dynamic, up to 32 MiB) in the heap.
A pass that allocates one tensor's temporaries and keeps a small result per tensor (index masks)
fragments that heap, so peak RSS grows with the number of tensors although the live memory does
not: on Llama-3.2-3B shapes the shared-parameter scan reached several GB more than it used.
`trim()` hands the free heap pages back (`malloc_trim`); without glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if platform.libc_ver()[0] == "glibc" else None


def trim() -> None:
    """Return free heap memory to the OS (glibc); cheap next to a tensor's worth of work."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
