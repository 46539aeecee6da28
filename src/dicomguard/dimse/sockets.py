"""TCP options of DIMSE connections.

Nagle's algorithm (RFC 896) holds a small segment back while earlier ones are
unacknowledged, and the peer delays its ACK (RFC 1122 4.2.3.2; up to 40 ms on
Linux): every sent object's last segment paid that wait. The archive switches
Nagle off on the associations it accepts and on those it opens (C-MOVE
sub-associations). It cannot switch it off for its peers: Debian's DCMTK 3.6.7
tools keep it on unless ``TCP_NODELAY`` is set in their environment. So the archive
also acknowledges what it receives at once (:func:`acknowledge_at_once`), and a
sender's held-back segment leaves without waiting for a delayed ACK.
"""

from __future__ import annotations

import socket
from typing import Any


def disable_nagle(sock: socket.socket) -> None:
    """Send each segment at once (``TCP_NODELAY``)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


_QUICKACK = getattr(socket, "TCP_QUICKACK", None)
"""Linux only (tcp(7)); elsewhere :func:`acknowledge_at_once` does nothing."""


def acknowledge_at_once(sock: Any) -> None:
    """Acknowledge received segments at once, not after the delayed-ACK timer (Linux ``TCP_QUICKACK``).

    A sender that keeps Nagle's algorithm on (DCMTK's tools unless ``TCP_NODELAY`` is set in their environment)
    holds the last, short segment of an object until everything it sent before is acknowledged. Linux delays
    that ACK (40 ms or more) once it takes the connection for an interactive one, as it does when each received
    object is answered by a C-STORE response. A C-STORE of 200 CT slices then took three times as long in some
    rounds (``bench/README.md``, session 24). The kernel drops the option again when it goes back to delaying, so
    it is set before every read of a PDU's header and of its body: two system calls per PDU. Errors are ignored
    (a socket that is not TCP).
    """
    if _QUICKACK is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
    except (OSError, AttributeError):
        pass


def on_connection_open(event: Any) -> None:
    """``EVT_CONN_OPEN`` handler for associations the archive requests: Nagle off on the new connection."""
    raw = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if raw is not None:
        disable_nagle(raw)
