"""Pass-through mode: each C-STORE is forwarded synchronously; nothing is queued.

For sites that must not hold PHI on the gateway host at all: the modality's
C-STORE is answered with the upstream's own status (PS3.4 B.2.3), so the
modality keeps its copy until the upstream has the object. If the upstream
cannot be reached the answer is 0xA700 "Refused: Out of Resources" and the
modality retries on its own schedule. Each modality association gets one
upstream association over mutual TLS (PS3.15 B.1), proposing exactly the
presentation contexts the modality negotiated, released with it.
"""

from __future__ import annotations

import logging
import ssl
import threading
from pathlib import Path

from pynetdicom.association import Association

from dicomguard.gateway._memfile import memory_file
from dicomguard.gateway.config import GatewayConfig
from dicomguard.gateway.listener import OUT_OF_RESOURCES, SUCCESS
from dicomguard.gateway.queue import Incoming
from dicomguard.gateway.status import GatewayStats
from dicomguard.gateway.upstream import ContextRefused, Outcome, UpstreamLink, UpstreamUnavailable, classify

log = logging.getLogger(__name__)


class PassThroughSink:
    def __init__(self, config: GatewayConfig, tls: ssl.SSLContext, stats: GatewayStats) -> None:
        self._config = config
        self._tls = tls
        self._stats = stats
        self._links: dict[int, UpstreamLink] = {}
        self._lock = threading.Lock()

    def _link(self, assoc: Association) -> UpstreamLink:
        with self._lock:
            link = self._links.get(id(assoc))
            if link is None:
                link = self._links[id(assoc)] = UpstreamLink(self._config, self._tls)
            return link

    def store(self, assoc: Association, source: Path | bytes, incoming: Incoming) -> int:
        link = self._link(assoc)
        negotiated = [(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts if cx.transfer_syntax]
        try:
            link.ensure((incoming.sop_class_uid, incoming.transfer_syntax_uid), negotiated)
        except (UpstreamUnavailable, ContextRefused) as exc:
            self._stats.error(str(exc))
            log.warning("pass-through: %s", exc)
            return OUT_OF_RESOURCES
        if isinstance(source, Path):
            status = link.send(source)
        else:
            with memory_file((source,)) as path:
                status = link.send(path)
        outcome = classify(status)
        if status is None:
            self._stats.error("no response from upstream")
            return OUT_OF_RESOURCES
        if outcome is Outcome.DELIVERED:
            self._stats.incr("received")
            self._stats.success()
            return SUCCESS if status == 0x0111 else status
        self._stats.error(f"upstream status 0x{status:04X}")
        return status

    def closed(self, assoc: Association) -> None:
        with self._lock:
            link = self._links.pop(id(assoc), None)
        if link is not None:
            link.release()

    def close(self) -> None:
        with self._lock:
            links, self._links = list(self._links.values()), {}
        for link in links:
            link.release()
