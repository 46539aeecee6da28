"""The detection service: context import, alerts (raise, list, read, acknowledge, resolve) and containment.

Each method is decided by the policies (``context-import``, ``context-feed``, ``alerts-read``,
``alerts-handle``, ``alerts-raise``) and recorded in its own transaction. Context (users, patients, orders) and
each alert's patients, explanation and evidence are PHI: sealed under the archive's
``detect`` key (AES-256-GCM, the row's identity as associated data). An alert is a PS3.15
Security Alert, so the collectors receive it like every other. Containment is graded per
severity (``[detection.containment]``): ``record``; ``step-up`` (the contained user's every
request needs a TOTP at most five minutes old, RFC 9470 ``acr``-style step-up, by the
``step-up-contained`` guard); ``suspend`` (sessions and tokens revoked, account disabled).
Releasing a containment is a recorded decision with a reason. A ``false-positive``
disposition feeds back: the user-patient pairs of the alert count as explained from then on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from dicomguard.core.access import Action, Resource
from dicomguard.core.events import AlertHandled, AlertRaised, ContextImported
from dicomguard.core.keyring import PURPOSE_DETECT
from dicomguard.core.service import Service
from dicomguard.core.services.shares import revoke_links_of
from dicomguard.crypto.aead import derive_key, open_sealed, seal
from dicomguard.errors import NotFoundError
from dicomguard.identity import tokens, users
from dicomguard.index.db import as_utc, read_session
from dicomguard.index.models import AlertRow, Containment, DetectionContext, User

if TYPE_CHECKING:
    from dicomguard.detect.hl7v2 import Outcome

CONTEXT_KINDS = ("users", "patients", "orders")
DISPOSITIONS = ("true-positive", "false-positive")
FEEDBACK = "feedback"
"""The context kind holding (user, patient) pairs explained by a false-positive disposition."""


@dataclass
class AlertView:
    id: int
    user: str
    kind: str
    severity: str
    start: datetime
    end: datetime
    status: str
    disposition: str | None
    containment: str
    patients: tuple[str, ...] = ()
    explanation: str = ""
    evidence: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "user": self.user, "kind": self.kind, "severity": self.severity, "start": self.start.isoformat(),
                "end": self.end.isoformat(), "status": self.status, "disposition": self.disposition, "containment": self.containment,
                "patients": list(self.patients), "explanation": self.explanation, "evidence": self.evidence, "notes": self.notes}


class DetectionService(Service):
    _derived: bytes | None = None

    def _key(self) -> bytes:
        # Created (committed) on first use: never from inside another write transaction (SQLite has one writer).
        if self._derived is None:
            self._derived = derive_key(self.ctx.keyring.ensure_archive_key(PURPOSE_DETECT), b"dicomguard detection rows v1")
        return self._derived

    def _seal(self, table: str, row_id: str, doc: object) -> bytes:
        return seal(self._key(), json.dumps(doc).encode(), f"{table}|{row_id}".encode())

    def _open(self, table: str, row_id: str, sealed: bytes) -> Any:
        return json.loads(open_sealed(self._key(), sealed, f"{table}|{row_id}".encode()))

    # -- context --------------------------------------------------------------------------------

    def import_context(self, kind: str, path: Path) -> int:
        """Validate and store one context file (``context-import``); it replaces the previous one of its kind.

        A file with a missing column, a bad date or a wrong encoding is refused whole, naming the line.
        """
        from dicomguard.detect import context as ctxfiles

        if kind not in CONTEXT_KINDS:
            raise ValueError(f"context kind must be one of {', '.join(CONTEXT_KINDS)}")
        self.access.authorize(Action.CONTEXT_IMPORT, Resource.archive())
        loader = {"users": ctxfiles.load_users_csv, "patients": ctxfiles.load_patients_csv, "orders": ctxfiles.load_orders_csv}[kind]
        parsed = loader(path)  # raises ContextError("file:line: reason"): nothing stored
        rows = len(parsed)
        raw = path.read_bytes().decode("utf-8-sig")
        self._key()
        now = datetime.now(UTC)
        with self.change() as s:
            s.merge(DetectionContext(kind=kind, sealed=self._seal("detection_context", kind, raw), rows=rows, imported_at=now))
            self.record(s, ContextImported(self.principal, kind, rows, now))
        return rows

    def import_fhir(self, path: Path) -> dict[str, int]:
        """Import users, patients and orders from HL7 FHIR R4 JSON (a Bundle, a resource or NDJSON; ``context-import``).

        Converted by :func:`dicomguard.detect.fhir.context_texts_from_fhir` into the CSV
        documents the CSV import stores, each kind present replacing the previous one,
        all in one transaction. Refused whole, naming the entry, if anything is wrong.
        Returns the rows per kind.
        """
        from dicomguard.detect import context as ctxfiles
        from dicomguard.detect.fhir import context_texts_from_fhir

        self.access.authorize(Action.CONTEXT_IMPORT, Resource.archive())
        texts = context_texts_from_fhir(path.read_bytes(), name=path.name)
        parsed = ctxfiles.context_from_texts(texts.get("users", ""), texts.get("patients", ""), texts.get("orders", ""))
        counts = {"users": len(parsed.users), "patients": len(parsed.patients), "orders": len(parsed.orders)}
        self._key()
        now = datetime.now(UTC)
        with self.change() as s:
            for kind, raw in texts.items():
                s.merge(DetectionContext(kind=kind, sealed=self._seal("detection_context", kind, raw), rows=counts[kind], imported_at=now))
            # One action, one record: the kinds replaced together ("users+patients+orders") and their rows.
            self.record(s, ContextImported(self.principal, "+".join(texts), sum(counts[k] for k in texts), now))
        return {kind: counts[kind] for kind in texts}

    def apply_hl7(self, messages: Sequence[bytes]) -> list[Outcome]:
        """Apply HL7 v2 messages of a feed to the stored context (``context-feed``): one outcome per message, in order.

        Decided once for the batch (a refusal raises :class:`AccessDenied`, recorded, and changes
        nothing). Each message is parsed and mapped by :func:`dicomguard.detect.hl7v2.context_update`;
        a wrong or unaccepted one gets its AE/AR outcome and the others go on. The accepted ones are
        merged into the stored documents (users and patients upserted by id, orders by accession,
        removals by key; :func:`dicomguard.detect.hl7v2.merge`), the result checked to load whole,
        sealed, and recorded as one ``ContextImported`` ("hl7:" and the message types) in one
        transaction, rows locked against a concurrent feed. AA is returned only after that
        transaction committed: the sender may forget a message only once it is durable (HL7 v2.5.1
        2.9.2). Any failure of the transaction raises: nothing of the batch is applied.
        """
        from dicomguard.detect import hl7v2

        self.access.authorize(Action.CONTEXT_FEED, Resource.archive())
        outcomes: list[Outcome | None] = [None] * len(messages)
        accepted: list[tuple[int, hl7v2.ContextUpdate]] = []
        for i, data in enumerate(messages):
            try:
                accepted.append((i, hl7v2.context_update(data)))
            except hl7v2.Hl7Error as exc:
                outcomes[i] = hl7v2.Outcome.of(exc)
        if accepted:
            self._key()
            now = datetime.now(UTC)
            updates = [u for _, u in accepted]
            for attempt in range(3):
                try:
                    self._merge_feed(updates, now)
                    break
                except IntegrityError:  # a concurrent feed created the same kind's first document: merge into it
                    if attempt == 2:
                        raise
            for i, _ in accepted:
                outcomes[i] = hl7v2.Outcome("AA")
        return [o for o in outcomes if o is not None]

    def _merge_feed(self, updates: list[Any], now: datetime) -> None:
        """One transaction: the stored documents locked, merged, checked to load whole, sealed, recorded."""
        from dicomguard.detect import context as ctxfiles
        from dicomguard.detect import hl7v2

        with self.change() as s:
            stored = {r.kind: r for r in s.scalars(select(DetectionContext).where(DetectionContext.kind.in_(CONTEXT_KINDS))
                                                   .with_for_update())}
            texts = {kind: self._open("detection_context", kind, r.sealed) for kind, r in stored.items()}
            merged, counts = hl7v2.merge(texts, updates)
            whole = {**texts, **merged}
            ctxfiles.context_from_texts(whole.get("users", ""), whole.get("patients", ""), whole.get("orders", ""))
            for kind, raw in merged.items():
                sealed = self._seal("detection_context", kind, raw)
                row = stored.get(kind)
                if row is not None:  # locked when read: no other feed changed it since
                    row.sealed, row.rows, row.imported_at = sealed, counts[kind], now
                else:
                    # Absent when read, so nothing was locked: insert, never upsert. A feed that created this kind's
                    # document meanwhile makes the insert fail (IntegrityError), and the caller merges into that one;
                    # an upsert would overwrite it with a merge that never saw it (an acknowledged update lost).
                    s.add(DetectionContext(kind=kind, sealed=sealed, rows=counts[kind], imported_at=now))
            types = "+".join(dict.fromkeys(u.message_type for u in updates))
            self.record(s, ContextImported(self.principal, f"hl7:{types}"[:120], sum(u.changes for u in updates), now))

    def context_version(self) -> tuple[tuple[str, int, datetime], ...]:
        """What changes whenever a stored context document does (kind, rows, time of its last change): cheap to
        poll, no PHI opened. The detector in ``serve`` reloads its context when it differs."""
        with read_session(self.ctx.engine) as s:
            rows = s.execute(select(DetectionContext.kind, DetectionContext.rows, DetectionContext.imported_at)
                             .order_by(DetectionContext.kind)).all()
        return tuple((kind, rows_, as_utc(at)) for kind, rows_, at in rows)

    def context_files(self) -> dict[str, str]:
        """The stored context documents (kind -> CSV text, plus the feedback pairs) for the detector; internal, no adapter shows them."""
        with read_session(self.ctx.engine) as s:
            return {r.kind: self._open("detection_context", r.kind, r.sealed) for r in s.scalars(select(DetectionContext))}

    # -- alerts ---------------------------------------------------------------------------------

    def raise_alert(self, user: str, kind: str, severity: str, start: datetime, end: datetime, patients: tuple[str, ...],
                    explanation: str, evidence: list[str]) -> tuple[int, str]:
        """Store and record an alert and apply its containment (``alerts-raise``; the detector). Returns (id, containment)."""
        self.access.authorize(Action.ALERTS_RAISE, Resource.archive())
        self._key()
        level = self.ctx.settings.detection.containment.get(severity, "record")
        now = datetime.now(UTC)
        with self.change() as s:
            row = AlertRow(user_name=user[:256], kind=kind[:64], severity=severity[:16], started_at=start, ended_at=end, created_at=now,
                           status="open", disposition=None, containment=level, sealed=b"")
            s.add(row)
            s.flush()
            row.sealed = self._seal("alerts", str(row.id), {"patients": list(patients), "explanation": explanation,
                                                             "evidence": evidence[:200], "notes": []})
            applied = self._contain(s, user, level, row.id, now)
            row.containment = applied
            self.record(s, AlertRaised(self.principal, row.id, user, kind, severity, patients, explanation, applied, now))
            return row.id, applied

    def _contain(self, s: Any, user: str, level: str, alert_id: int, now: datetime) -> str:
        account = s.get(User, user)
        if level == "record" or account is None:
            return "record"  # a user the archive does not know (imported ATNA) cannot be contained here
        existing = s.get(Containment, user)
        if existing is not None and (existing.level == "suspend" or level == existing.level):
            return existing.level
        disabled = False
        if level == "suspend":
            disabled = not account.disabled
            users.set_disabled(s, user, True)
            users.end_sessions(s, user, now)
            tokens.revoke_user_tokens(s, user)
            revoke_links_of(s, self.ctx, self.principal, user, f"containment after alert {alert_id}", now)  # ADR 0010
        if existing is None:
            s.add(Containment(user_name=user, level=level, alert_id=alert_id, since=now, disabled_account=disabled))
        else:
            existing.level, existing.alert_id, existing.disabled_account = level, alert_id, existing.disabled_account or disabled
        return level

    def alerts(self, status: str | None = "open") -> list[AlertView]:
        """Alerts without their patients or explanation (``alerts-read``; no PHI, not recorded)."""
        self.access.authorize(Action.ALERTS_READ, Resource.archive())
        with read_session(self.ctx.engine) as s:
            q = select(AlertRow).order_by(AlertRow.id)
            if status:
                q = q.where(AlertRow.status == status)
            return [self._view(r, sealed=False) for r in s.scalars(q)]

    def show(self, alert_id: int) -> AlertView:
        """One alert with its patients, explanation and evidence (``alerts-read``; recorded: it shows PHI)."""
        self.access.authorize(Action.ALERTS_READ, Resource.archive())
        with read_session(self.ctx.engine) as s:
            row = s.get(AlertRow, alert_id)
            if row is None:
                raise NotFoundError(f"no alert {alert_id}")
            view = self._view(row, sealed=True)
        self.record_alone(AlertHandled(self.principal, alert_id, "viewed", None, datetime.now(UTC)))
        return view

    def _view(self, r: AlertRow, sealed: bool) -> AlertView:
        view = AlertView(r.id, r.user_name, r.kind, r.severity, as_utc(r.started_at), as_utc(r.ended_at), r.status, r.disposition,
                         r.containment)
        if sealed:
            doc = self._open("alerts", str(r.id), r.sealed)
            view.patients, view.explanation = tuple(doc["patients"]), doc["explanation"]
            view.evidence, view.notes = doc.get("evidence", []), doc.get("notes", [])
        return view

    def handle(self, alert_id: int, action: str, disposition: str | None = None, note: str = "") -> None:
        """Acknowledge or resolve an alert (``alerts-handle``); ``resolve`` needs a disposition; a false positive feeds back."""
        if action not in ("acknowledge", "resolve"):
            raise ValueError("action must be acknowledge or resolve")
        if action == "resolve" and disposition not in DISPOSITIONS:
            raise ValueError(f"resolve needs --disposition {' or '.join(DISPOSITIONS)}")
        now = self._handling()
        for attempt in range(3):
            try:
                with self.change() as s:
                    row = self._alert(s, alert_id)
                    doc = self._noted(row, note, now)
                    row.status = "acknowledged" if action == "acknowledge" else "resolved"
                    row.disposition = disposition if action == "resolve" else row.disposition
                    if disposition == "false-positive":
                        self._explain(s, row.user_name, doc["patients"], now)
                    self.record(s, AlertHandled(self.principal, alert_id, row.status, row.disposition, now))
                return
            except IntegrityError:  # another handling created the first feedback document meanwhile: add to it
                if attempt == 2:
                    raise

    def _handling(self) -> datetime:
        """Decide ``alerts-handle`` (the row key made first: never inside the write transaction); the time of the handling."""
        self._key()
        self.access.authorize(Action.ALERTS_HANDLE, Resource.archive())
        return datetime.now(UTC)

    @staticmethod
    def _alert(s: Any, alert_id: int) -> AlertRow:
        """The alert's row, locked for this write transaction: its sealed notes are read, appended to and sealed back,
        and a concurrent handling must not write back a document that lacks this one's note (PostgreSQL; SQLite's
        write transactions already run one at a time)."""
        row = s.get(AlertRow, alert_id, with_for_update=True)
        if row is None:
            raise NotFoundError(f"no alert {alert_id}")
        return row

    def _noted(self, row: AlertRow, note: str, now: datetime) -> dict[str, Any]:
        """The alert's sealed document, with ``note`` (if any) appended under the principal's name, sealed back."""
        doc: dict[str, Any] = self._open("alerts", str(row.id), row.sealed)
        if note:
            doc["notes"] = [*doc.get("notes", []), f"{now.isoformat()} {self.principal.label()}: {note[:2000]}"]
            row.sealed = self._seal("alerts", str(row.id), doc)
        return doc

    def _explain(self, s: Any, user: str, patients: list[str], now: datetime) -> None:
        """Add (user, patient) pairs to the feedback document, locked while read and written back. A first document
        is inserted, never upserted: one created meanwhile by another handling fails this one (IntegrityError,
        nothing of it applied) rather than being overwritten without its pairs."""
        stored = s.get(DetectionContext, FEEDBACK, with_for_update=True)
        pairs = self._open("detection_context", FEEDBACK, stored.sealed) if stored else []
        pairs = sorted({*map(tuple, pairs), *((user, p) for p in patients)})
        sealed = self._seal("detection_context", FEEDBACK, pairs)
        if stored is not None:
            stored.sealed, stored.rows, stored.imported_at = sealed, len(pairs), now
        else:
            s.add(DetectionContext(kind=FEEDBACK, sealed=sealed, rows=len(pairs), imported_at=now))

    def contain(self, alert_id: int, level: str, note: str = "") -> str:
        """Contain the alert's user now (``alerts-handle``): ``step-up`` or ``suspend``, as configured levels do.

        The officer's one-click answer to an alert: the same containment the
        detector applies by severity ([detection.containment]), recorded with the
        alert and undone by :meth:`release`. Returns the level in force.
        """
        if level not in ("step-up", "suspend"):
            raise ValueError("containment level must be step-up or suspend")
        now = self._handling()
        with self.change() as s:
            row = self._alert(s, alert_id)
            if s.get(User, row.user_name) is None:
                raise ValueError("the alert names a user of another system: contain them there")
            applied = self._contain(s, row.user_name, level, alert_id, now)
            row.containment = applied
            self._noted(row, f"contained ({applied}){': ' + note if note else ''}", now)
            self.record(s, AlertHandled(self.principal, alert_id, f"contained ({applied})", None, now))
        return applied

    def release(self, user: str, reason: str) -> str:
        """End a user's containment (``alerts-handle``): re-enable the account if the containment disabled it."""
        if len(reason.strip()) < 10:
            raise ValueError("a release needs a reason (at least 10 characters)")
        now = self._handling()
        with self.change() as s:
            c = s.get(Containment, user)
            if c is None:
                raise NotFoundError(f"{user} is not contained")
            level, alert_id = c.level, c.alert_id
            if c.disabled_account and s.get(User, user) is not None:
                users.set_disabled(s, user, False)
            s.delete(c)
            row = s.get(AlertRow, alert_id)
            if row is not None:
                self._noted(row, f"released: {reason}", now)
            self.record(s, AlertHandled(self.principal, alert_id, f"released ({level})", None, now))
        return level
