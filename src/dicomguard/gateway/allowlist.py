"""The gateway's allow-list: which (calling AE title, source IP) pairs may open an association.

Stored in the index (``gateway_allow``), so ``dicomguard gateway allow/deny``
take effect at the next association and, because the listener checks again
before every C-STORE, within a running association too. Default deny: an
empty list refuses everyone. Changing or listing it is an action
(:class:`AllowListService`: ``allowlist-change``/``allowlist-read``, decided by
the policies, each change recorded as a Security Configuration alert in its
transaction); the listener only reads it.

What this is and is not: PS3.8 7.1.1 identifies the requestor only by AE
titles, which travel in clear and are not authenticated; a source address on a
shared network can be spoofed. Binding the title to the address raises the bar
against misconfigured or casual senders; it is not the device authentication
that the TLS listener does with certificates (PS3.15 B.1). Keep the plaintext
segment isolated.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, delete, select

from dicomguard.core.access import Action, Resource
from dicomguard.core.events import SecurityConfigurationChanged
from dicomguard.core.service import Service
from dicomguard.gateway.config import GatewayError, check_ae, normalize_ip
from dicomguard.index.db import read_session
from dicomguard.index.models import GatewayAllow


@dataclass(frozen=True)
class AllowEntry:
    ae_title: str
    ip: str
    created_at: datetime


class AllowList:
    """Reads ``gateway_allow``. Entries are normalised (AE title stripped, canonical IP)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def entries(self) -> list[AllowEntry]:
        with read_session(self._engine) as s:
            rows = s.scalars(select(GatewayAllow).order_by(GatewayAllow.ae_title, GatewayAllow.ip))
            return [AllowEntry(r.ae_title, r.ip, r.created_at) for r in rows]

    def is_allowed(self, calling_ae: str, peer_ip: str) -> bool:
        """True only for an exact (AE title, address) match; malformed input is simply not allowed."""
        try:
            ae, addr = check_ae(calling_ae), normalize_ip(peer_ip)
        except GatewayError:
            return False
        with read_session(self._engine) as s:
            return s.get(GatewayAllow, (ae, addr)) is not None


class AllowListService(Service):
    """``dicomguard gateway allow|deny|list`` and ``/admin/gateway/allow``."""

    def allow(self, ae_title: str, ip: str) -> bool:
        """Add a pair; False (and nothing recorded) when it was already allowed."""
        ae, addr = check_ae(ae_title), normalize_ip(ip)
        self.access.authorize(Action.ALLOWLIST_CHANGE, Resource.allow_list())
        with self.change() as s:
            if s.get(GatewayAllow, (ae, addr)) is not None:
                return False
            s.add(GatewayAllow(ae_title=ae, ip=addr, created_at=datetime.now(UTC)))
            self.record(s, SecurityConfigurationChanged(self.principal, f"gateway-allow:{ae}", f"{ae} at {addr} allowed",
                                                        datetime.now(UTC)))
        return True

    def deny(self, ae_title: str, ip: str | None = None) -> int:
        """Remove one pair, or every address of the AE title when ``ip`` is None; returns how many."""
        ae = check_ae(ae_title)
        stmt = delete(GatewayAllow).where(GatewayAllow.ae_title == ae)
        where = "every address"
        if ip is not None:
            where = normalize_ip(ip)
            stmt = stmt.where(GatewayAllow.ip == where)
        self.access.authorize(Action.ALLOWLIST_CHANGE, Resource.allow_list())
        with self.change() as s:
            removed = int(s.execute(stmt).rowcount or 0)  # type: ignore[attr-defined]
            if removed:
                self.record(s, SecurityConfigurationChanged(self.principal, f"gateway-allow:{ae}", f"{ae} at {where} denied "
                                                            f"({removed} entries removed)", datetime.now(UTC)))
        return removed

    def list(self) -> list[AllowEntry]:
        self.access.authorize(Action.ALLOWLIST_READ, Resource.allow_list())
        return AllowList(self.ctx.engine).entries()
