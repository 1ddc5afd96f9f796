"""The process's memory after a large job.

A job holds ~25-35x its file in memory while it runs. Python frees the
objects when it ends, but glibc keeps the heaps they grew resident (one per
thread that allocated): after 3 MB of ordinary orders ~80 % of the job's
growth stayed in the daemon, and a worker process that ran one large file
held it while the next ran in another (``[daemon] max_bytes_in_flight``
bounds the files in flight, not what they leave behind). ``give_back``
hands the free part back to the operating system (``malloc_trim``): ~43 %
stayed, most of it SQLite's page cache (32 MB a connection, kept by design).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

# A job of a file this large or larger gives back what it freed: the walk
# over the heap costs ~1-10 ms, nothing beside a job of a megabyte.
GIVE_BACK_AFTER = 1024 * 1024


def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None (another C library, such as musl)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return getattr(libc, "malloc_trim", None)


_TRIM = _malloc_trim()


def give_back(size: int) -> None:
    """After a job of ``size`` bytes: the heap's free memory back to the
    operating system if the file was large."""
    if size >= GIVE_BACK_AFTER and _TRIM is not None:
        _TRIM(0)
