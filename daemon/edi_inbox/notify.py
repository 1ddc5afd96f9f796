"""systemd's notify protocol (sd_notify), without libsystemd.

A datagram of ``KEY=VALUE`` lines to the Unix socket named by
``$NOTIFY_SOCKET``; a leading ``@`` names a socket in the abstract namespace.
The protocol is stable and this is all of it (systemd documents a
self-contained ~20-line client in sd_notify(3)). Outside systemd the variable
is unset and every call is a no-op.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


def notify(state: str, environ: Mapping[str, str] | None = None, *, timeout: float = 0.0) -> bool:
    """Send ``state`` (``"READY=1"``, ``"STATUS=…"``…); True if it was sent.

    Never raises and never blocks for longer than ``timeout`` (0: not at all):
    a datagram to a receiver whose queue is full (a listener that stopped
    reading) would otherwise block the daemon's loop for good. A lost
    ``STATUS=`` does no harm, and a missed ``WATCHDOG=1`` is what systemd's
    watchdog is there to notice.
    """
    environ = os.environ if environ is None else environ
    address = environ.get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return False
    if address[0] == "@":
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            if timeout > 0:
                sock.settimeout(timeout)
            else:
                sock.setblocking(False)
            sock.connect(address)
            sock.sendall(state.encode("utf-8", "replace"))
    except OSError:
        return False
    return True


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``$WATCHDOG_USEC``, or None
    when systemd's watchdog is off or meant for another process."""
    environ = os.environ if environ is None else environ
    pid = environ.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2 / 1_000_000 if usec > 0 else None
