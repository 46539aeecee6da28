"""The posture report reads the archive's real state: changing the configuration or the records changes the findings."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from dicomguard.app.posture import posture_csv, posture_html, posture_oscal
from dicomguard.core.access import AccessDenied, Principal, PrincipalKind
from dicomguard.index.db import write_session
from dicomguard.index.models import BackupRun
from tests.identity.conftest import add_user


def _status(archive) -> dict[str, bool]:  # type: ignore[no-untyped-def]
    return {f.id: f.satisfied for f in archive.operator.posture.assess().findings}


def test_findings_follow_the_configuration_and_the_records(archive) -> None:  # type: ignore[no-untyped-def]
    first = _status(archive)
    assert first["tls-in-transit"] and first["encryption-at-rest"] and first["mfa-step-up"] and first["default-deny"]
    assert not first["audit-forwarding"] and not first["backup-drill"] and not first["integrity-verified"]
    assert not first["log-review"]  # not recorded by the archive yet: said as a gap, not hidden

    archive.operator.verify.run()
    assert _status(archive)["integrity-verified"]

    archive.operator.allow_list.allow("OLDCT", "10.1.2.3")  # a legacy modality on the plaintext gateway
    assert not _status(archive)["tls-in-transit"]

    # Turn the second factor off for erasure in the policies: the posture shows it.
    guards = archive.home / "policies" / "guards.cedar"
    text = guards.read_text()
    start = text.index('@id("step-up-erase")')
    guards.write_text(text[:start] + text[text.index("unless { context.mfa_age <= 300 };", start) + len("unless { context.mfa_age <= 300 };"):])
    archive.operator.policies.reload()
    after = archive.operator.posture.assess()
    gap = next(f for f in after.findings if f.id == "mfa-step-up")
    assert not gap.satisfied and "step-up-erase" in gap.evidence

    # A backup target whose last drill failed.
    with (archive.home / "config.toml").open("a", encoding="utf-8") as f:
        f.write(f'\n[[backup.target]]\nname = "nas"\nkind = "folder"\nlocation = "{archive.home.parent / "nas"}"\n')
    from dicomguard.app.archive import Archive
    from tests.conftest import PASSPHRASE

    with Archive.open(archive.home, PASSPHRASE) as reopened:
        now = datetime.now(UTC)
        with write_session(reopened.ctx.engine) as s:
            s.add(BackupRun(target="nas", kind="drill", snapshot_id="s1", started_at=now, finished_at=now, ok=False, detail="{}"))
        failed = next(f for f in reopened.operator.posture.assess().findings if f.id == "backup-drill")
        assert not failed.satisfied and "failed" in failed.evidence, failed.evidence
        with write_session(reopened.ctx.engine) as s:
            s.add(BackupRun(target="nas", kind="drill", snapshot_id="s2", started_at=now, finished_at=now, ok=True, detail="{}"))
        assert _status(reopened)["backup-drill"]


def test_oscal_validates_with_compliance_trestle_and_html_puts_gaps_first(archive) -> None:  # type: ignore[no-untyped-def]
    from trestle.oscal import assessment_results as trestle  # a test dependency: never skipped

    posture = archive.operator.posture.assess()
    doc = json.loads(json.dumps(posture_oscal(posture, "DICOMGUARD")))
    model = trestle.AssessmentResults
    parsed = model.model_validate(doc["assessment-results"]) if hasattr(model, "model_validate") else model.parse_obj(doc["assessment-results"])
    states = [f.target.status.state for f in parsed.results[0].findings]
    assert len(states) == len(posture.findings) and {getattr(s, "value", s) for s in states} == {"satisfied", "not-satisfied"}
    html = posture_html(posture, "<DICOMGUARD>")
    assert html.index("GAP") < html.index(">satisfied<") and "&lt;DICOMGUARD&gt;" in html and "<script" not in html
    rows = posture_csv(posture).splitlines()
    assert rows[0].startswith("id,title,status") and "not-satisfied" in rows[1]


def test_who_may_read_the_posture(archive) -> None:  # type: ignore[no-untyped-def]
    add_user(archive, "sec.sam", "security_officer")
    add_user(archive, "dr.x", "radiologist", "RADIOLOGY")
    officer = Principal(PrincipalKind.USER, "sec.sam", frozenset({"security_officer"}))
    assert archive.services(officer).posture.assess().findings
    with pytest.raises(AccessDenied):
        archive.services(Principal(PrincipalKind.USER, "dr.x", frozenset({"radiologist"}))).posture.assess()
