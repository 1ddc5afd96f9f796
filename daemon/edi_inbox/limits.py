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
# The least the daemon starts with: its own (the observer, the database and
# its checkpointer, locks, the log, pipes to worker processes) and, for each
# worker, a job's (the upload, its claim's folder, its thread's SQLite
# connection, the ERP's socket, the 997 being written).
BASE_FILES = 32
FILES_A_WORKER = 6


def raise_open_files(workers: int) -> str | None:
    """Raise the soft ``RLIMIT_NOFILE`` toward the hard one (at most
    ``OPEN_FILES``). Why the daemon cannot start, if the limit cannot serve
    ``workers`` even then (a container's ``ulimit -n 32``: every job would
    park, claimed, and none end)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        logger.info("open_files_raised", soft=target, was=soft)
        soft = target
    needed = BASE_FILES + FILES_A_WORKER * workers
    if soft != resource.RLIM_INFINITY and soft < needed:
        return (
            f"the open-file limit is {soft} (RLIMIT_NOFILE, hard {hard}): {workers} workers"
            f" need at least {needed}; raise LimitNOFILE= (ulimit -n) or lower [daemon] workers"
        )
    return None
