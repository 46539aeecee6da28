"""Routine log review with sign-off, the risk register with derived risks, the asset inventory, media sanitisation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dicomguard.app.governance import GovernanceError, ReviewScheduler
from dicomguard.core.access import AccessDenied, Principal, PrincipalKind
from dicomguard.core.events import GovernanceRecorded
from dicomguard.errors import NotFoundError
from tests.dicom_factory import ALICE, ct_series
from tests.identity.conftest import add_user


def _status(archive, check: str) -> bool:  # type: ignore[no-untyped-def]
    return next(f for f in archive.operator.posture.assess().findings if f.id == check).satisfied


def test_a_review_is_assembled_signed_off_once_and_feeds_the_posture(archive, events) -> None:  # type: ignore[no-untyped-def]
    archive.operator.store.ingest(ct_series(ALICE, n=1, size=16, seed=3)[0])
    archive.operator.retrieve.plan(study_uids=[archive.operator.query.find_studies()[0].uid])
    assert not _status(archive, "log-review")
    scheduler = ReviewScheduler(archive.operator)
    assert scheduler.tick(datetime.now(UTC))  # the first review of the archive
    assert not scheduler.tick(datetime.now(UTC))  # not again before a period has passed
    (review,) = archive.operator.governance.reviews()
    assert review["summary"]["records"] >= 2 and review["signed_off_at"] is None
    assert not _status(archive, "log-review")  # assembled is not reviewed
    with pytest.raises(ValueError, match="note"):
        archive.operator.governance.sign_off(review["id"], "ok")
    archive.operator.governance.sign_off(review["id"], "looked at refusals and exports: nothing unexplained")
    with pytest.raises(GovernanceError, match="already signed off"):
        archive.operator.governance.sign_off(review["id"], "a second signature")
    with pytest.raises(NotFoundError):
        archive.operator.governance.sign_off(review["id"] + 9, "no such review here")
    assert _status(archive, "log-review")
    actions = [e.action for e in events if isinstance(e, GovernanceRecorded)]
    assert actions == ["review-assembled", "review-signed-off"]
    assert scheduler.tick(datetime.now(UTC) + timedelta(days=8))  # a week later, the next one


def test_the_risk_register_lists_its_own_and_derived_risks(archive) -> None:  # type: ignore[no-untyped-def]
    governance = archive.operator.governance
    number = governance.add_risk(asset="CT3 (legacy)", threat="malware on an unpatched modality", vulnerability="Windows 7",
                                 likelihood=4, impact=4, owner="imaging IT", treatment="isolate on the gateway VLAN")
    with pytest.raises(ValueError, match="likelihood"):
        governance.add_risk(asset="x", threat="y", vulnerability="", likelihood=6, impact=1, owner="z", treatment="")
    risks = governance.risks()
    mine = next(r for r in risks if r.id == number)
    assert mine.score == 16 and mine.source == "register"
    derived = [r for r in risks if r.source == "derived"]
    assert {r.asset for r in derived} >= {"backups", "audit trail"}  # no target drilled, no collector, no review
    assert risks == sorted(risks, key=lambda r: (-r.score, r.source, r.asset))
    assert not _status(archive, "risks")  # an open risk scored 16: a posture gap
    governance.update_risk(number, status="closed", treatment="modality replaced")
    assert _status(archive, "risks")
    assert number not in {r.id for r in governance.risks()}
    assert number in {r.id for r in governance.risks(include_closed=True)}
    with pytest.raises(ValueError, match="status"):
        governance.update_risk(number, status="forgotten")
    add_user(archive, "root2", "admin")  # a brand-new admin is not dormant
    assert not [r for r in governance.risks() if r.asset == "account root2"]


def test_assets_and_media_sanitisation(archive, events) -> None:  # type: ignore[no-untyped-def]
    archive.operator.devices.add("CT1", "CT room 1", operations=("store",))
    archive.operator.allow_list.allow("OLDUS", "10.0.0.9")
    found = archive.operator.governance.assets()
    assert [d["ae_title"] for d in found["devices"]] == ["CT1"] and found["devices"][0]["expires_in_days"] > 30
    assert found["legacy_gateway_only"] == ["OLDUS"] and found["storage"]["kind"] == "filesystem"
    archive.operator.governance.record_sanitisation("backup disk NAS-2", "NIST SP 800-88 destroy: shredded", "end of life")
    assert [e.action for e in events if isinstance(e, GovernanceRecorded)] == ["media-sanitised"]
    with pytest.raises(ValueError, match="medium"):
        archive.operator.governance.record_sanitisation("", "x", "end of life")


def test_only_officers_keep_the_register_and_sign_reviews(archive) -> None:  # type: ignore[no-untyped-def]
    add_user(archive, "dr.x", "radiologist", "RADIOLOGY")
    clinician = archive.services(Principal(PrincipalKind.USER, "dr.x", frozenset({"radiologist"})))
    for attempt in (lambda: clinician.governance.risks(), lambda: clinician.governance.assemble_review(),
                    lambda: clinician.governance.record_sanitisation("disk", "shred", "cover my tracks")):
        with pytest.raises(AccessDenied):
            attempt()
    add_user(archive, "sec.sam", "security_officer")
    officer = archive.services(Principal(PrincipalKind.USER, "sec.sam", frozenset({"security_officer"})))
    assert officer.governance.assets()["storage"]["kind"] == "filesystem"
