"""Networks an incident contains (``incident contain --network``): refused at connection by every listener.

The listeners ask :func:`is_blocked` for each new HTTPS request and DIMSE association;
the list is read from the index at most every ``TTL_S`` seconds per process, so a
containment reaches every worker within that time (NIST SP 800-61r3 containment).
"""

from __future__ import annotations

import ipaddress
import threading
import time

from sqlalchemy import select
from sqlalchemy.engine import Engine

from dicomguard.index.db import read_session
from dicomguard.index.models import NetworkBlock

TTL_S = 2.0

_lock = threading.Lock()
_cache: dict[int, tuple[float, tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]]] = {}


def blocked_networks(engine: Engine) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    now = time.monotonic()
    with _lock:
        hit = _cache.get(id(engine))
        if hit is not None and now - hit[0] < TTL_S:
            return hit[1]
    with read_session(engine) as s:
        networks = tuple(ipaddress.ip_network(c) for c in s.scalars(select(NetworkBlock.cidr)))
    with _lock:
        _cache[id(engine)] = (now, networks)
    return networks


def is_blocked(engine: Engine, address: str | None) -> bool:
    """Whether connections from ``address`` are refused (an unparseable address is not: it cannot be matched)."""
    networks = blocked_networks(engine)
    if not networks or not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in n for n in networks if n.version == ip.version)


def forget() -> None:
    """Drop the cached list (tests, and a release in this process)."""
    with _lock:
        _cache.clear()
