"""Share links (ADR 0010): create, list, show, revoke; and the recipient's gate (PIN, sessions).

A link is two secrets on two channels: a 256-bit token in the URL (stored as
SHA-256 only, like API tokens) and a short PIN the person sharing passes on by
phone or in person (stored as an HMAC under an archive key, so a copy of the
index alone cannot test PINs). A forwarded link alone opens nothing; a few
wrong PINs lock the link (NIST SP 800-63B 5.2.2 rate limiting).

Whoever opens a link with its PIN becomes a :meth:`Principal.share` principal
whose scope is the link's study: the policies (``sharing.cedar``) decide every
request it makes, like any principal's, and the archive narrows a link made
for some series to those series. Expiry, revocation and "used up" are checked
on every request, so they take effect at once.

A share for a research recipient (or whenever a policy annotated
``@deidentify`` says so) is made from a de-identified copy (PS3.15 Annex E,
``dicomguard.deid``): the copy is stored in the archive as its own study,
labelled ``share-copy`` (visible to share links only), and the link serves only
that copy. The source is never changed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from dicomguard.core.access import Action, Principal, Resource
from dicomguard.core.context import ArchiveContext
from dicomguard.core.events import ShareCreated, ShareRevoked, UserAuthentication
from dicomguard.core.ingest import IngestPipeline
from dicomguard.core.keyring import PURPOSE_SHARE
from dicomguard.core.service import Service
from dicomguard.crypto.aead import derive_key, open_sealed, seal
from dicomguard.errors import DicomGuardError, NotFoundError
from dicomguard.index.db import as_utc, read_session, write_session
from dicomguard.index.models import ShareLink, ShareSession, ShareUse

SHARE_COPY_LABEL = "share-copy"
"""Label of a de-identified copy made for a share link (``sharing.cedar`` keeps it from everyone else)."""
RECIPIENT_KINDS = ("internal", "external", "research", "patient")
"""Who a link is for; policies decide on it (``context.recipient``): external ones need a step-up, research ones
a de-identified copy."""
MAX_RECIPIENT_TEXT = 500
_TOUCH_EVERY = timedelta(seconds=30)


class ShareRefused(DicomGuardError, ValueError):
    """A link could not be made or opened. ``public`` is all a recipient is told."""

    def __init__(self, public: str, reason: str) -> None:
        super().__init__(reason)
        self.public = public
        self.reason = reason


WRONG_LINK_OR_PIN = "This link and PIN do not open anything. Check both with the person who shared it."


def share_keys(ctx: ArchiveContext) -> tuple[bytes, bytes]:
    """(sealing key, PIN MAC key) of share rows, derived from the archive's ``share`` key (created on first use).

    Never call inside an open write transaction: creating the key commits (SQLite has one writer).
    """
    root = ctx.keyring.ensure_archive_key(PURPOSE_SHARE)
    return derive_key(root, b"dicomguard share rows v1"), derive_key(root, b"dicomguard share pin v1")


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def pin_mac(key: bytes, share_id: str, pin: str) -> bytes:
    return hmac.new(key, f"{share_id}|{pin}".encode(), hashlib.sha256).digest()


@dataclass(frozen=True)
class CreatedShare:
    """What the person sharing is shown once: the token and PIN are not stored in the clear anywhere."""

    id: str
    token: str
    pin: str
    expires_at: datetime
    study_uid: str
    served_study_uid: str
    deidentified: bool
    deidentified_by_policy: bool
    download: bool
    max_uses: int | None
    series: tuple[str, ...]
    copied: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)
    """Objects the de-identification refused (not in the copy), with the reason."""

    def to_json(self, url: str) -> dict[str, Any]:
        return {"id": self.id, "url": url, "pin": self.pin, "expires_at": self.expires_at.isoformat(), "study": self.study_uid,
                "served_study": self.served_study_uid, "deidentified": self.deidentified,
                "deidentified_by_policy": self.deidentified_by_policy, "download": self.download, "max_uses": self.max_uses,
                "series": list(self.series), "copied": self.copied,
                "refused": [{"instance": i, "reason": r} for i, r in self.refused]}


@dataclass(frozen=True)
class ShareView:
    id: str
    owner: str
    study_uid: str
    served_study_uid: str
    recipient_kind: str
    recipient: str
    download: bool
    deidentified: bool
    created_at: datetime
    expires_at: datetime
    max_uses: int | None
    uses: int
    failed_pins: int
    state: str
    """``active``, ``expired``, ``revoked``, ``used-up`` or ``locked``."""
    series: tuple[str, ...] = ()
    revoked_by: str | None = None
    uses_log: tuple[tuple[datetime, str, str], ...] = ()
    """(when, what, address) for ``share show``: opened, pin-refused, locked, refused, downloaded, viewed."""

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "owner": self.owner, "study": self.study_uid, "served_study": self.served_study_uid,
                "recipient_kind": self.recipient_kind, "recipient": self.recipient, "download": self.download,
                "deidentified": self.deidentified, "created_at": self.created_at.isoformat(), "expires_at": self.expires_at.isoformat(),
                "max_uses": self.max_uses, "uses": self.uses, "failed_pins": self.failed_pins, "state": self.state,
                "series": list(self.series), "revoked_by": self.revoked_by,
                "uses_log": [{"at": at.isoformat(), "what": what, "address": addr} for at, what, addr in self.uses_log]}


def state_of(row: ShareLink, now: datetime) -> str:
    if row.revoked_at is not None:
        return "revoked"
    if row.locked_at is not None:
        return "locked"
    if as_utc(row.expires_at) <= now:
        return "expired"
    if row.max_uses is not None and row.uses >= row.max_uses:
        return "used-up"
    return "active"


class ShareService(Service):
    """Share links of studies, decided as ``share`` (create), ``share-read`` and ``share-revoke``."""

    _keys: tuple[bytes, bytes] | None = None

    def _key(self, which: int) -> bytes:
        if self._keys is None:
            self._keys = share_keys(self.ctx)
        return self._keys[which]

    def _seal(self, share_id: str, doc: dict[str, Any]) -> bytes:
        return seal(self._key(0), json.dumps(doc).encode(), f"share_links|{share_id}".encode())

    def _open(self, row: ShareLink) -> dict[str, Any]:
        return json.loads(open_sealed(self._key(0), row.sealed, f"share_links|{row.id}".encode()))  # type: ignore[no-any-return]

    # -- create --------------------------------------------------------------------------------

    def create(
        self,
        study_uid: str,
        *,
        recipient: str,
        recipient_kind: str = "external",
        expires_in: timedelta | None = None,
        max_uses: int | None = None,
        download: bool = False,
        series: Sequence[str] = (),
        deidentify: bool = False,
        deid_options: frozenset[Any] = frozenset(),
    ) -> CreatedShare:
        """Share one study (or some of its series) by link; decided as ``share`` on the study.

        The request context tells the policies the recipient's kind, whether it is
        outside the organisation and whether the link would serve a de-identified
        copy. Refused only by ``@deidentify`` guards, the share is made
        de-identified instead (``deidentified_by_policy``). A study the principal
        may not see answers like one that does not exist.
        """
        settings = self.ctx.settings.sharing
        recipient = " ".join(recipient.split())
        if not recipient:
            raise ValueError("say who the share is for and why (--to)")
        if len(recipient) > MAX_RECIPIENT_TEXT:
            raise ValueError(f"--to is at most {MAX_RECIPIENT_TEXT} characters")
        if recipient_kind not in RECIPIENT_KINDS:
            raise ValueError(f"recipient kind must be one of {', '.join(RECIPIENT_KINDS)}")
        expires_in = expires_in or timedelta(hours=settings.default_expiry_hours)
        if expires_in <= timedelta(0) or expires_in > timedelta(hours=settings.max_expiry_hours):
            raise ValueError(f"a share link expires after at most {settings.max_expiry_hours} hours")
        if max_uses is not None and not 1 <= max_uses <= 1000:
            raise ValueError("--max-uses is between 1 and 1000")
        resource = self.visible_study(study_uid, Action.SHARE)
        external = recipient_kind != "internal"
        decision = self.access.decide(Action.SHARE, resource, external=external, recipient=recipient_kind, deidentified=deidentify)
        by_policy = False
        if not decision.allowed and decision.deidentify and not deidentify:
            deidentify = by_policy = True
            decision = self.access.decide(Action.SHARE, resource, external=external, recipient=recipient_kind, deidentified=True)
        self.access.enforce(Action.SHARE, resource, decision)
        series = tuple(dict.fromkeys(series))
        known = {se.uid for se in self.access.index.series(study_uid=study_uid)}
        for uid in series:
            if uid not in known:
                raise ValueError(f"series {uid} is not in study {study_uid}")
        self._key(0)  # created before the write transaction below
        share_id = secrets.token_hex(8)
        token = secrets.token_urlsafe(32)  # 256 bits
        pin = "".join(secrets.choice("0123456789") for _ in range(settings.pin_digits))
        served, copied, refused, scope = study_uid, 0, [], series
        if deidentify:
            served, copied, refused = self.deidentified_copy(f"share-{share_id}", study_uid, series, deid_options)
            scope = ()  # the copy holds only the series shared
        now = datetime.now(UTC)
        expires_at = now + expires_in
        with self.change() as s:
            s.add(ShareLink(id=share_id, token_sha256=token_digest(token), pin_mac=pin_mac(self._key(1), share_id, pin),
                            owner=self.principal.name, study_uid=served, source_study_uid=study_uid, recipient_kind=recipient_kind,
                            download=download, deidentified=deidentify, created_at=now, expires_at=expires_at, max_uses=max_uses,
                            uses=0, failed_pins=0, locked_at=None, revoked_at=None, revoked_by=None,
                            sealed=self._seal(share_id, {"recipient": recipient, "series": list(scope), "source_series": list(series),
                                                         "options": sorted(str(getattr(o, "value", o)) for o in deid_options)})))
            self.record(s, ShareCreated(self.principal, share_id, study_uid, served, resource.patient_ref, recipient_kind, deidentify,
                                        download, expires_at, len(series), now))
        return CreatedShare(share_id, token, pin, expires_at, study_uid, served, deidentify, by_policy, download, max_uses, scope,
                            copied, refused)

    def visible_study(self, study_uid: str, action: Action) -> Resource:
        """The study's resource; an unknown study and one the principal may not query both raise :class:`NotFoundError`."""
        resource = self.access.study_resources([study_uid]).get(study_uid)
        if resource is None or study_uid not in self.access.visible_studies([study_uid])[0]:
            if resource is not None:
                self.access.record_refusal(action, resource, "the study is not visible to the principal")
            raise NotFoundError(f"no study {study_uid}")
        return resource

    def deidentified_copy(self, project: str, study_uid: str, series: Sequence[str],
                          options: frozenset[Any]) -> tuple[str, int, list[tuple[str, str]]]:
        """De-identify the study (or some series) into a new study labelled ``share-copy``: (its UID, objects, refused).

        The source is read through a retrieve plan decided as ``share`` (recorded as an access); the copy is
        stored through the ingest pipeline, each object recorded with its ledger leaf (source ``project``).
        Pseudonyms are keyed per ``project`` (one per share or transfer): copies are not linkable to each other.
        """
        from dicomguard.core.keyring import PURPOSE_DEID
        from dicomguard.core.services.deid import project_key
        from dicomguard.core.services.retrieve import RetrieveService
        from dicomguard.deid.engine import Deidentifier
        from dicomguard.deid.errors import DeidRefused
        from dicomguard.deid.pixels import clean_pixels

        plan = RetrieveService(self.ctx, self.access).plan(Action.SHARE, study_uids=[] if series else [study_uid],
                                                            series_uids=list(series))
        keys = project_key(self.ctx.keyring.ensure_archive_key(PURPOSE_DEID), project)
        engine = Deidentifier(options, keys, pixel_cleaner=clean_pixels)
        refused: list[tuple[str, str]] = []
        served: set[str] = set()

        def derived() -> Iterator[tuple[str, Any]]:
            for record, obj in plan.objects():
                if isinstance(obj, DicomGuardError):
                    refused.append((record.sop_instance_uid, f"not released: {obj}"))
                    continue
                try:
                    out, outcome = engine.deidentify_bytes(obj.data)
                except DeidRefused as exc:
                    refused.append((record.sop_instance_uid, str(exc)))
                    continue
                except Exception as exc:  # noqa: BLE001 - fail closed: what the engine cannot clean is not shared
                    refused.append((record.sop_instance_uid, f"de-identification failed ({type(exc).__name__})"))
                    continue
                served.add(str(outcome.dataset.StudyInstanceUID))
                yield record.sop_instance_uid, (lambda data=out: data)

        pipeline = IngestPipeline(self.ctx, project, self.principal, study_labels=frozenset({SHARE_COPY_LABEL}))
        copied = 0
        for outcome in pipeline.ingest_many(derived()):
            if outcome.error is not None:
                refused.append((outcome.label, f"copy not stored: {outcome.error}"))
            else:
                copied += 1
        if not copied or len(served) != 1:
            raise ShareRefused("nothing could be shared de-identified", "no object of the study could be shared de-identified: " +
                                  "; ".join(f"{uid}: {why}" for uid, why in refused[:5]))
        return served.pop(), copied, refused

    # -- list, show, revoke ------------------------------------------------------------------------

    def list(self, *, everyone: bool = False, include_inactive: bool = False) -> list[ShareView]:
        """The principal's links (``share-read`` on each); with ``everyone``, every link (decided first on links in general,
        so the answer never depends on whether others have links)."""
        if everyone:
            self.access.authorize(Action.SHARE_READ, Resource.share_link("*", ""))
        with read_session(self.ctx.engine) as s:
            q = select(ShareLink).order_by(ShareLink.created_at.desc())
            if not everyone:
                q = q.where(ShareLink.owner == self.principal.name)
            rows = list(s.scalars(q))
        now = datetime.now(UTC)
        out = []
        for row in rows:
            if not self.access.decide(Action.SHARE_READ, Resource.share_link(row.id, row.owner)).allowed:
                continue
            view = self._view(row, now)
            if include_inactive or view.state == "active":
                out.append(view)
        return out

    def show(self, share_id: str) -> ShareView:
        """One link with its uses (``share-read``); a link the principal may not read answers like an unknown one."""
        row = self._readable(share_id, Action.SHARE_READ)
        with read_session(self.ctx.engine) as s:
            uses = tuple((as_utc(u.at), u.kind, u.address) for u in s.scalars(
                select(ShareUse).where(ShareUse.share_id == share_id).order_by(ShareUse.id)))
        view = self._view(row, datetime.now(UTC))
        return ShareView(**{**view.__dict__, "uses_log": uses})

    def revoke(self, share_id: str, reason: str) -> ShareView:
        """End a link and every recipient session at once (``share-revoke``; recorded)."""
        reason = " ".join(reason.split())[:300]
        if not reason:
            raise ValueError("say why the link is revoked (--reason)")
        row = self._readable(share_id, Action.SHARE_REVOKE)
        now = datetime.now(UTC)
        with self.change() as s:
            revoke_links(s, self.ctx, self.principal, [row.id], reason, now)
        row = self._readable(share_id, Action.SHARE_READ)
        return self._view(row, now)

    def _readable(self, share_id: str, action: Action) -> ShareLink:
        with read_session(self.ctx.engine) as s:
            row = s.get(ShareLink, share_id.strip().lower())
        if row is None:
            raise NotFoundError(f"no share link {share_id}")
        resource = Resource.share_link(row.id, row.owner)
        decision = self.access.decide(action, resource)
        if not decision.allowed:
            self.access.record_refusal(action, resource, decision.reason)
            if action is Action.SHARE_READ or not self.access.decide(Action.SHARE_READ, resource).allowed:
                raise NotFoundError(f"no share link {share_id}")
            self.access.enforce(action, resource, decision)
        return row

    def _view(self, row: ShareLink, now: datetime) -> ShareView:
        doc = self._open(row)
        return ShareView(row.id, row.owner, row.source_study_uid, row.study_uid, row.recipient_kind, doc.get("recipient", ""),
                         row.download, row.deidentified, as_utc(row.created_at), as_utc(row.expires_at), row.max_uses, row.uses,
                         row.failed_pins, state_of(row, now), tuple(doc.get("source_series") or ()), row.revoked_by)


def revoke_links(s: Session, ctx: ArchiveContext, by: Principal, share_ids: Sequence[str], reason: str, now: datetime) -> int:
    """Revoke links and end their sessions inside ``s``, one ``ShareRevoked`` event each; returns how many were active."""
    ids = list(s.scalars(select(ShareLink.id).where(ShareLink.id.in_(share_ids), ShareLink.revoked_at.is_(None))))
    if not ids:
        return 0
    s.execute(update(ShareLink).where(ShareLink.id.in_(ids)).values(revoked_at=now, revoked_by=by.label()[:256]))
    s.execute(delete(ShareSession).where(ShareSession.share_id.in_(ids)))
    for share_id in ids:
        ctx.bus.publish(s, ShareRevoked(by, share_id, reason, now))
    return len(ids)


def revoke_links_of(s: Session, ctx: ArchiveContext, by: Principal, owner: str, reason: str, now: datetime) -> int:
    """Revoke every active link ``owner`` created (a containment: a suspended account's links die with it)."""
    ids = list(s.scalars(select(ShareLink.id).where(ShareLink.owner == owner, ShareLink.revoked_at.is_(None))))
    return revoke_links(s, ctx, by, ids, reason, now)


# -- the recipient's side -------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenedShare:
    session: str
    """The session secret for the recipient's cookie (stored as SHA-256 only)."""
    principal: Principal
    expires_at: datetime


class ShareGate:
    """Opens links with their PIN and turns recipient sessions into principals; every attempt is recorded.

    Not a :class:`Service`: the caller is nobody yet. It decides nothing the policies
    decide: it authenticates (link + PIN, then a session), and the resulting
    principal's every request is authorized like anyone's.
    """

    def __init__(self, ctx: ArchiveContext) -> None:
        self.ctx = ctx
        self._keys: tuple[bytes, bytes] | None = None

    def _key(self, which: int) -> bytes:
        if self._keys is None:
            self._keys = share_keys(self.ctx)
        return self._keys[which]

    def open(self, token: str, pin: str, address: str) -> OpenedShare:
        """Check link and PIN; raises :class:`ShareRefused` (recorded) or returns a new session.

        Unknown link and wrong PIN answer alike. Only someone holding both secrets
        learns that the link expired, was revoked, used up or locked.
        """
        settings = self.ctx.settings.sharing
        pin_key = self._key(1)
        now = datetime.now(UTC)
        address = (address or "unknown")[:64]
        pin = pin.strip()
        digest = token_digest(token.strip())
        with write_session(self.ctx.engine) as s:
            row = s.scalar(select(ShareLink).where(ShareLink.token_sha256 == digest).with_for_update())
            if row is None or not hmac.compare_digest(bytes(row.token_sha256), digest):
                self._auth(s, "share:unknown", "failure", now, address, "share link unknown")
                failure = ShareRefused(WRONG_LINK_OR_PIN, "unknown link")
            elif not hmac.compare_digest(bytes(row.pin_mac), pin_mac(pin_key, row.id, pin)):
                row.failed_pins += 1
                kind = "pin-refused"
                if row.failed_pins >= settings.max_pin_failures and row.locked_at is None:
                    row.locked_at = now
                    kind = "locked"
                s.add(ShareUse(share_id=row.id, at=now, kind=kind, address=address))
                self._auth(s, f"share:{row.id}", "lockout" if kind == "locked" else "failure", now, address,
                           "wrong PIN" + ("; link locked" if kind == "locked" else ""))
                failure = ShareRefused(WRONG_LINK_OR_PIN, "wrong PIN")
            else:
                state = state_of(row, now)
                if state != "active":
                    s.add(ShareUse(share_id=row.id, at=now, kind="refused", address=address))
                    self._auth(s, f"share:{row.id}", "failure", now, address, f"link {state}")
                    failure = ShareRefused(_STATE_TEXT[state], f"link {state}")
                else:
                    row.uses += 1
                    secret = secrets.token_urlsafe(32)
                    expires = min(as_utc(row.expires_at), now + timedelta(seconds=settings.session_max_s))
                    s.add(ShareSession(id_sha256=token_digest(secret), share_id=row.id, created_at=now, expires_at=expires,
                                       last_seen_at=now, address=address))
                    s.add(ShareUse(share_id=row.id, at=now, kind="opened", address=address))
                    self._auth(s, f"share:{row.id}", "login", now, address, "")
                    principal = self._principal(row, address)
                    return OpenedShare(secret, principal, expires)
        raise failure

    def principal(self, session_secret: str, address: str) -> Principal | None:
        """The recipient of a live session, or ``None`` (unknown, idle, expired; link revoked, expired or locked)."""
        settings = self.ctx.settings.sharing
        now = datetime.now(UTC)
        digest = token_digest(session_secret)
        with read_session(self.ctx.engine) as s:
            found = s.execute(select(ShareSession, ShareLink).join(ShareLink, ShareLink.id == ShareSession.share_id)
                              .where(ShareSession.id_sha256 == digest)).first()
        if found is None:
            return None
        session, row = found
        last = as_utc(session.last_seen_at)
        alive = (as_utc(session.expires_at) > now and now - last < timedelta(seconds=settings.session_idle_s)
                 and row.revoked_at is None and row.locked_at is None and as_utc(row.expires_at) > now)
        if not alive:
            return None
        if now - last > _TOUCH_EVERY:  # idle time is kept to the half-minute: not one write per request
            with write_session(self.ctx.engine) as s:
                s.execute(update(ShareSession).where(ShareSession.id_sha256 == digest).values(last_seen_at=now))
        return self._principal(row, (address or session.address)[:64])

    def end(self, session_secret: str) -> None:
        with write_session(self.ctx.engine) as s:
            s.execute(delete(ShareSession).where(ShareSession.id_sha256 == token_digest(session_secret)))

    def note(self, principal: Principal, kind: str) -> None:
        """A use the owner sees in ``share show`` (viewed, downloaded); the data read itself is in the audit trail."""
        with write_session(self.ctx.engine) as s:
            s.add(ShareUse(share_id=str(principal.attributes["share_id"]), at=datetime.now(UTC), kind=kind[:16], address=(principal.address or "unknown")[:64]))

    def _principal(self, row: ShareLink, address: str) -> Principal:
        series: list[str] = []
        if not row.deidentified:
            doc = json.loads(open_sealed(self._key(0), row.sealed, f"share_links|{row.id}".encode()))
            series = list(doc.get("series") or ())
        return Principal.share(row.id, studies=[row.study_uid], series=series, download=row.download,
                               deidentified=row.deidentified, address=address)

    def _auth(self, s: Session, user: str, kind: str, now: datetime, address: str, reason: str) -> None:
        self.ctx.bus.publish(s, UserAuthentication(user, kind, now, address, reason))


_STATE_TEXT = {
    "expired": "This link has expired. Ask the person who shared it for a new one.",
    "revoked": "This link was withdrawn by the person who shared it or by the security team.",
    "used-up": "This link has been used as many times as it allows. Ask for a new one.",
    "locked": "This link is locked after too many wrong PINs. Ask the person who shared it for a new one.",
}
