"""TCP options of DIMSE connections.

Nagle's algorithm (RFC 896) holds a small segment back while earlier ones are
unacknowledged, and the peer delays its ACK (RFC 1122 4.2.3.2; up to 40 ms on
Linux): every sent object's last segment paid that wait. DCMTK disables Nagle on
its DIMSE sockets; so does the archive, on the associations it accepts and on
those it opens (C-MOVE sub-associations).
"""

from __future__ import annotations

import socket
from typing import Any


def disable_nagle(sock: socket.socket) -> None:
    """Send each segment at once (``TCP_NODELAY``)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def on_connection_open(event: Any) -> None:
    """``EVT_CONN_OPEN`` handler for associations the archive requests: Nagle off on the new connection."""
    raw = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if raw is not None:
        disable_nagle(raw)
