"""Site-to-site transfer (ADR 0010): peers, the outbound queue, delivery over mutual TLS, and received provenance.

Sending. ``send`` is decided as ``share`` on the study (context: recipient
``peer``, outside the organisation unless the peer is registered as internal,
de-identified or not) and queued as a :class:`TransferJob` whose study and
instance list are sealed; the objects stay encrypted in the archive until they
are read for a delivery. ``deliver_due`` (the ``serve`` loop, or ``share send
--wait``) pushes each job in batches over STOW-RS (PS3.18 10.5) with the client
certificate the peer issued to this archive, verifying the peer's server
certificate against the CA registered for it (RFC 8446 mutual authentication).
Every batch carries, per object, this ledger's inclusion proof (RFC 9162) and
signed checkpoint. A peer that is down is retried with exponential backoff;
what it already stored is simply stored again (STOW-RS of an identical object is
idempotent), so a job is delivered once, whole, when the peer returns. A peer
that refuses an object or the connection for good fails the job (a Security
Alert).

Receiving. A peer is a registered device (``device add``) whose certificate
authenticates its STOW-RS; registered as a peer with its ledger key, every
object it sends must carry a proof under that key that verifies against the
object's own bytes (:func:`dicomguard.transfer.verify_provenance`): an object
without one is refused, the others are stored, and the proofs are kept beside
the objects (``object_provenance``) and recorded (``ProvenanceVerified``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from dicomguard.app.periodic import PeriodicTask
from dicomguard.app.sealed_docs import SealedDocuments
from dicomguard.core.access import Action, Principal, PrincipalKind, Resource
from dicomguard.core.events import SecurityConfigurationChanged, ShareCreated, TransferDelivered
from dicomguard.core.keyring import PURPOSE_SHARE
from dicomguard.core.service import Service
from dicomguard.core.services.retrieve import RetrieveService
from dicomguard.core.services.shares import ShareService
from dicomguard.errors import DicomGuardError, NotFoundError
from dicomguard.index.db import as_utc, read_session
from dicomguard.index.models import ObjectProvenance, Peer, TransferJob
from dicomguard.ledger.checkpoint import CheckpointVerifier
from dicomguard.ledger.service import Ledger
from dicomguard.pki.tls import client_context

log = logging.getLogger(__name__)
_PEER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class PeerView:
    name: str
    url: str
    external: bool
    device: str | None
    ledger_key: str | None
    can_send: bool

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.url, "external": self.external, "device": self.device,
                "ledger_key": self.ledger_key, "can_send": self.can_send}


@dataclass(frozen=True)
class JobView:
    id: int
    peer: str
    state: str
    objects: int
    attempts: int
    created_at: datetime
    delivered_at: datetime | None
    last_error: str | None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "peer": self.peer, "state": self.state, "objects": self.objects, "attempts": self.attempts,
                "created_at": self.created_at.isoformat(), "delivered_at": self.delivered_at.isoformat() if self.delivered_at else None,
                "last_error": self.last_error}


@dataclass(frozen=True)
class ReceivedCheck:
    """What the provenance check of one STOW-RS request decided: labels accepted, and labels refused with the reason."""

    accepted: list[str]
    refused: dict[str, str]
    peer: str | None


class TransferService(Service):
    def __init__(self, ctx, access, ledger: Ledger) -> None:  # type: ignore[no-untyped-def]
        super().__init__(ctx, access)
        self.ledger = ledger
        self._docs = SealedDocuments(ctx, PURPOSE_SHARE, b"dicomguard transfer rows v1")

    def _key(self) -> bytes:
        return self._docs.ensure_key()

    def _seal(self, table: str, row: str, doc: object) -> bytes:
        return self._docs.seal(table, row, doc)

    def _open(self, table: str, row: str, sealed: bytes) -> Any:
        return self._docs.open(table, row, sealed)

    # -- peers -------------------------------------------------------------------------------------

    def add_peer(self, name: str, *, url: str, ca_pem: str, cert_pem: str | None = None, key_pem: str | None = None,
                 ledger_key: str | None = None, device: str | None = None, external: bool = True) -> PeerView:
        """Register a peer archive (``peer-add``; recorded as a Security Configuration change)."""
        if not _PEER_NAME.match(name):
            raise ValueError("a peer name is 1-64 letters, digits, '-' or '_'")
        if not url.startswith("https://"):
            raise ValueError("a peer's DICOMweb root is an https:// URL")
        if "BEGIN CERTIFICATE" not in ca_pem:
            raise ValueError("--ca is not a PEM certificate")
        if (cert_pem is None) != (key_pem is None):
            raise ValueError("give both the client certificate and its key, or neither")
        if cert_pem is not None:
            client_context(ca_pem.encode(), cert_pem.encode(), key_pem.encode())  # type: ignore[union-attr]  # refuses a mismatched pair now
        if ledger_key is not None:
            try:
                CheckpointVerifier.from_verifier_key(ledger_key.strip())
            except Exception as exc:  # noqa: BLE001 - any parse failure is the same bad input
                raise ValueError(f"--ledger-key is not a ledger verifier key: {exc}") from None
        self.access.authorize(Action.PEER_ADD, Resource.peer(name, external))
        now = datetime.now(UTC)
        sealed_key = self._seal("peers", name, {"key": key_pem}) if key_pem else None
        with self.change() as s:
            if s.get(Peer, name) is not None:
                raise ValueError(f"peer {name} exists: remove it first")
            s.add(Peer(name=name, url=url.rstrip("/"), ca_pem=ca_pem, ledger_key=ledger_key.strip() if ledger_key else None,
                       device=device, cert_pem=cert_pem, key_sealed=sealed_key, external=external, created_at=now))
            self.record(s, SecurityConfigurationChanged(self.principal, f"peer:{name}", f"peer added: {url.rstrip('/')}"
                                                        + (f", device {device}" if device else "")
                                                        + (", ledger proofs required" if ledger_key else ""), now))
        return self._peer_view(name)

    def remove_peer(self, name: str) -> None:
        with read_session(self.ctx.engine) as s:
            peer = s.get(Peer, name)
        if peer is None:
            raise NotFoundError(f"no peer {name}")
        self.access.authorize(Action.PEER_ADD, Resource.peer(name, peer.external))
        now = datetime.now(UTC)
        with self.change() as s:
            s.delete(s.get(Peer, name))
            self.record(s, SecurityConfigurationChanged(self.principal, f"peer:{name}", "peer removed", now))

    def peers(self) -> list[PeerView]:
        with read_session(self.ctx.engine) as s:
            rows = list(s.scalars(select(Peer).order_by(Peer.name)))
        self.access.authorize(Action.PEER_READ, Resource.peer("*"))
        return [_view(p) for p in rows]

    def _peer_view(self, name: str) -> PeerView:
        with read_session(self.ctx.engine) as s:
            row = s.get(Peer, name)
            assert row is not None
            return _view(row)

    # -- sending -----------------------------------------------------------------------------------

    def send(self, study_uid: str, peer_name: str, *, deidentify: bool = False, deid_options: frozenset[Any] = frozenset()) -> JobView:
        """Queue a study for a peer (decided as ``share``; recorded). De-identified: a copy is made and sent instead."""
        with read_session(self.ctx.engine) as s:
            peer = s.get(Peer, peer_name)
        if peer is None:
            raise ValueError(f"no peer {peer_name} (dicomguard peer add)")
        if not peer.cert_pem:
            raise ValueError(f"peer {peer_name} has no client certificate to send with (peer add --cert --key)")
        shares = ShareService(self.ctx, self.access)
        resource = shares.visible_study(study_uid, Action.SHARE)
        decision = self.access.decide(Action.SHARE, resource, external=peer.external, recipient="peer", deidentified=deidentify)
        if not decision.allowed and decision.deidentify and not deidentify:
            deidentify = True
            decision = self.access.decide(Action.SHARE, resource, external=peer.external, recipient="peer", deidentified=True)
        self.access.enforce(Action.SHARE, resource, decision)
        self._key()
        served = study_uid
        if deidentify:
            served, _, _ = shares.deidentified_copy(f"transfer-{peer_name}-{int(time.time())}", study_uid, (), deid_options)
        uids = [r.sop_instance_uid for r in self.access.index.instances(study_uid=served)]
        now = datetime.now(UTC)
        with self.change() as s:
            job = TransferJob(peer=peer_name, state="queued", created_by=self.principal.label()[:256], created_at=now, attempts=0,
                              next_attempt_at=now, delivered_at=None, objects=len(uids), last_error=None, sealed=b"")
            s.add(job)
            s.flush()
            job.sealed = self._seal("transfer_jobs", str(job.id), {"study": served, "source": study_uid, "uids": uids, "sent": 0})
            self.record(s, ShareCreated(self.principal, f"transfer-{job.id}", study_uid, served, resource.patient_ref,
                                        f"peer:{peer_name}", deidentify, True, None, 0, now))
            job_id = job.id
        return self._job(job_id)

    def jobs(self) -> list[JobView]:
        self.access.authorize(Action.PEER_READ, Resource.peer("*"))
        with read_session(self.ctx.engine) as s:
            return [_job_view(j) for j in s.scalars(select(TransferJob).order_by(TransferJob.id.desc()))]

    def _job(self, job_id: int) -> JobView:
        with read_session(self.ctx.engine) as s:
            row = s.get(TransferJob, job_id)
            if row is None:
                raise NotFoundError(f"no transfer {job_id}")
            return _job_view(row)

    def deliver_now(self, job_id: int, wait_s: float) -> JobView:
        """Attempt a job now and again as its backoff allows, for up to ``wait_s`` seconds (``share send --wait``)."""
        deadline = time.monotonic() + wait_s
        while True:
            self._attempt(job_id)
            job = self._job(job_id)
            if job.state != "queued" or time.monotonic() >= deadline:
                return job
            with read_session(self.ctx.engine) as s:
                due = as_utc(s.get(TransferJob, job_id).next_attempt_at)  # type: ignore[union-attr]
            time.sleep(max(0.05, min(deadline - time.monotonic(), (due - datetime.now(UTC)).total_seconds())))

    def deliver_due(self) -> int:
        """Attempt every queued job whose time has come (the ``serve`` loop); returns how many were attempted."""
        now = datetime.now(UTC)
        with read_session(self.ctx.engine) as s:
            due = list(s.scalars(select(TransferJob.id).where(TransferJob.state == "queued", TransferJob.next_attempt_at <= now)))
        for job_id in due:
            self._attempt(job_id)
        return len(due)

    def _attempt(self, job_id: int) -> None:
        from dicomguard.transfer import PermanentTransferError, RetryableTransferError, build_provenance, describe_reason, send_instances

        settings = self.ctx.settings.sharing
        with read_session(self.ctx.engine) as s:
            job = s.get(TransferJob, job_id)
            if job is None or job.state != "queued":
                return
            peer = s.get(Peer, job.peer)
            doc = self._open("transfer_jobs", str(job.id), job.sealed)
        if peer is None or not peer.cert_pem or peer.key_sealed is None:
            self._finish(job_id, doc, delivered=False, error="the peer is no longer registered (or has no client certificate)")
            return
        key_pem = self._open("peers", peer.name, peer.key_sealed)["key"]
        context = client_context(peer.ca_pem.encode(), peer.cert_pem.encode(), key_pem.encode())
        # The reads of a delivery were decided when the job was queued: they are made, and recorded, as the transfer.
        reader = RetrieveService(self.ctx, _as_transfer(self.ctx, peer.name))
        uids: list[str] = doc["uids"]
        sent = int(doc.get("sent", 0))
        try:
            while sent < len(uids):
                batch = uids[sent:sent + settings.transfer_batch]
                plan = reader.plan(Action.EXPORT, sop_instance_uids=batch)
                objects = (obj.data for obj in plan.verified())  # one object in memory at a time
                proofs = build_provenance(self.ledger.origin, {uid: self.ledger.prove_instance(uid) for uid in batch})
                outcome = send_instances(peer.url, objects, ssl_context=context, provenance=proofs)
                failed = {uid: o for uid, o in outcome.instances.items() if not o.ok}
                missing = outcome.missing(batch)
                if failed or missing:
                    first = next(iter(failed.items()), None)
                    why = f"{first[0]}: {describe_reason(first[1].reason or 0)}" if first else f"{len(missing)} objects not acknowledged"
                    raise PermanentTransferError(f"the peer refused {len(failed) or len(missing)} object(s) ({why})")
                sent += len(batch)
                doc["sent"] = sent
                self._progress(job_id, doc)
        except RetryableTransferError as exc:
            self._retry(job_id, doc, str(exc), getattr(exc, "retry_after_s", None))
            return
        except (PermanentTransferError, DicomGuardError, ValueError) as exc:
            self._finish(job_id, doc, delivered=False, error=str(exc))
            return
        self._finish(job_id, doc, delivered=True, error=None)

    def _progress(self, job_id: int, doc: dict[str, Any]) -> None:
        with self.change() as s:
            job = s.get(TransferJob, job_id)
            assert job is not None
            job.sealed = self._seal("transfer_jobs", str(job_id), doc)

    def _retry(self, job_id: int, doc: dict[str, Any], error: str, retry_after_s: float | None) -> None:
        settings = self.ctx.settings.sharing
        with self.change() as s:
            job = s.get(TransferJob, job_id)
            assert job is not None
            job.attempts += 1
            job.last_error = error[:512]
            job.sealed = self._seal("transfer_jobs", str(job_id), doc)
            if job.attempts >= settings.transfer_max_attempts:
                job.state = "failed"
                self.record(s, TransferDelivered(self.principal, job_id, job.peer, doc["study"], int(doc.get("sent", 0)), False,
                                                 f"gave up after {job.attempts} attempts: {error}"[:512], datetime.now(UTC)))
                return
            delay = min(settings.transfer_retry_max_s, settings.transfer_retry_s * 2 ** (job.attempts - 1))
            job.next_attempt_at = datetime.now(UTC) + timedelta(seconds=max(delay, retry_after_s or 0))

    def _finish(self, job_id: int, doc: dict[str, Any], *, delivered: bool, error: str | None) -> None:
        now = datetime.now(UTC)
        with self.change() as s:
            job = s.get(TransferJob, job_id)
            assert job is not None
            job.attempts += 1
            job.state = "delivered" if delivered else "failed"
            job.delivered_at = now if delivered else None
            job.last_error = error[:512] if error else None
            self.record(s, TransferDelivered(self.principal, job_id, job.peer, doc["study"], int(doc.get("sent", 0)), delivered,
                                             error or "", now))

    # -- receiving ---------------------------------------------------------------------------------

    def peer_requiring_proofs(self) -> str | None:
        """The name of the peer this principal is, if that peer's objects must carry ledger proofs."""
        peer = self._peer_of_principal()
        return peer.name if peer is not None and peer.ledger_key else None

    def check_received(self, items: Sequence[tuple[str, Callable[[], bytes]]], provenance: bytes | None) -> ReceivedCheck:
        """Which received objects may be stored: from a peer registered with a ledger key, only those its proofs cover.

        ``items`` are (label, loader of the Part 10 bytes), loaded one at a time. A principal that is no registered peer (or one without a ledger
        key) has nothing to prove. Verified proofs are kept and recorded when :meth:`keep_provenance` is called
        for the objects actually stored.
        """
        from dicomguard.transfer import ProvenanceError, parse_provenance

        peer = self._peer_of_principal()
        if peer is None or not peer.ledger_key:
            return ReceivedCheck([label for label, _ in items], {}, peer.name if peer else None)
        if provenance is None:
            return ReceivedCheck([], {label: "no provenance: this peer's objects must carry its ledger's proofs" for label, _ in items},
                                 peer.name)
        try:
            manifest = parse_provenance(provenance)
        except ProvenanceError as exc:
            return ReceivedCheck([], {label: f"provenance unreadable: {exc}" for label, _ in items}, peer.name)
        accepted, refused = [], {}
        self._verified: dict[str, tuple[Any, dict[str, Any]]] = {}
        for label, load in items:
            data = load()
            uid = _sop_instance_uid(data)
            try:
                if uid is None:
                    raise ProvenanceError("not a readable DICOM object")
                proven = manifest.verify(uid, data, peer.ledger_key)
            except ProvenanceError as exc:
                refused[label] = f"provenance: {exc}"
                continue
            accepted.append(label)
            self._verified[uid] = (proven, manifest.bundles[uid])
        return ReceivedCheck(accepted, refused, peer.name)

    def keep_provenance(self, stored_uids: Iterable[str], peer: str) -> None:
        """Keep the verified proofs of the objects stored and record them (one ``ProvenanceVerified``)."""
        from dicomguard.core.events import ProvenanceVerified

        verified = getattr(self, "_verified", {})
        kept = [uid for uid in stored_uids if uid in verified]
        if not kept:
            return
        now = datetime.now(UTC)
        origin = verified[kept[0]][0].checkpoint.origin
        digest = hashlib.sha256("".join(f"{u} {verified[u][0].index} {verified[u][0].checkpoint.size}\n" for u in sorted(kept)).encode())
        with self.change() as s:
            for uid in kept:
                proven, bundle = verified[uid]
                s.merge(ObjectProvenance(sop_instance_uid=uid, peer=peer, origin=origin[:256], leaf_index=proven.index,
                                         tree_size=proven.checkpoint.size, received_at=now, bundle=json.dumps(bundle)))
            self.record(s, ProvenanceVerified(self.principal, peer, origin, tuple(sorted(kept)), digest.hexdigest(), now))

    def _peer_of_principal(self) -> Peer | None:
        if self.principal.kind is not PrincipalKind.DEVICE:
            return None
        with read_session(self.ctx.engine) as s:
            return s.scalar(select(Peer).where(Peer.device == self.principal.name))


def _as_transfer(ctx, peer: str):  # type: ignore[no-untyped-def]
    from dicomguard.core.access_control import AccessControl

    return AccessControl(ctx, Principal(PrincipalKind.OPERATOR, f"transfer:{peer}", frozenset({"operator"})))


def _sop_instance_uid(data: bytes) -> str | None:
    import io

    import pydicom

    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
        return str(ds.SOPInstanceUID)
    except Exception:  # noqa: BLE001 - anything unreadable has no UID to prove
        return None


def _view(p: Peer) -> PeerView:
    return PeerView(p.name, p.url, p.external, p.device, p.ledger_key, bool(p.cert_pem and p.key_sealed))


def _job_view(j: TransferJob) -> JobView:
    return JobView(j.id, j.peer, j.state, j.objects, j.attempts, as_utc(j.created_at), as_utc(j.delivered_at) if j.delivered_at else None,
                   j.last_error)


class TransferWorker(PeriodicTask):
    """The ``serve`` thread that delivers queued transfers when they are due (one per archive host)."""

    NAME = "transfers"
    POLL_S = 2.0

    def tick(self, now: datetime) -> int:
        return int(self.services.transfers.deliver_due())
