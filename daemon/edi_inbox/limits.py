"""The daemon's open-file limit.

A job holds descriptors while it runs (the upload, its claim's folder, the
SQLite connection of its thread, the ERP's socket, the 997 being written), 16
workers at once, beside the observer and the database's checkpointer. A
shell's soft limit (1024, or 32 in a tight container) can be below that:
files would then meet "Too many open files". At start the soft limit is
raised to the hard one, at most ``OPEN_FILES`` (what the unit's
``LimitNOFILE=`` gives), as any process may without privileges. What is
still short then is the daemon's trouble, never a file's: a file that cannot
be opened for it is looked at again later (``files.short_of_resources``).
"""

from __future__ import annotations

import resource

import structlog

logger = structlog.get_logger("edi_inbox.limits")

OPEN_FILES = 65536  # the unit's LimitNOFILE=


def raise_open_files() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` toward the hard one (at most
    ``OPEN_FILES``); the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    logger.info("open_files_raised", soft=target, was=soft)
    return target
