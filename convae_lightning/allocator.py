"""glibc malloc settings that keep a training step's large temporaries in the heap.

By default glibc serves allocations above a dynamic threshold (at most 32 MB) with fresh ``mmap``
pages and gives them back on ``free``: every training step then page-faults its activations and
gradients in again (about 23,000 minor faults per step of a 4-unit CAE at batch 128 here) and
runs slower and noisier (cpu-performance-notes.md: +18% to +61% with the ``MALLOC_*_``
variables set). The console scripts apply the same settings at start-up through ``mallopt`` (no
``LD_PRELOAD``, no re-exec): no ``mmap`` for allocations, no trimming of the heap's top below
2 GB, 512 MB of padding per heap extension. Users who set any ``MALLOC_*`` variable keep their
own settings; other C libraries are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

__all__ = ["is_tuned", "tune_malloc"]

log = logging.getLogger(__name__)

# mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4
#: (parameter, value): serve every allocation from the heap, never trim it below 2 GB free
#: (mallopt takes an int), grow it 512 MB at a time.
_SETTINGS = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_TOP_PAD, 512 << 20))

_tuned = False


def tune_malloc() -> bool:
    """Apply the settings once per process; returns whether they are in effect.

    Skipped (``False``) where the C library is not glibc, and where the user set a ``MALLOC_*``
    variable (their choice wins).
    """
    global _tuned
    if _tuned:
        return True
    if any(name.startswith("MALLOC_") for name in os.environ):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    _tuned = all(mallopt(parameter, value) == 1 for parameter, value in _SETTINGS)
    if not _tuned:
        log.debug("mallopt refused the allocator settings")
    return _tuned


def is_tuned() -> bool:
    """Whether :func:`tune_malloc` applied its settings in this process."""
    return _tuned
