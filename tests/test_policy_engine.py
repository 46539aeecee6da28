"""The Cedar policy engine and the shipped default policies (issue 5, points 3-5).

Pure decisions (no database): each default role against the resources it may
and may not touch, the guards (VIP, step-up), break-glass context, fail-closed
evaluation, and validation of policy files on load.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dicomguard.core.access import Action, Principal, PrincipalKind, RequestContext, Resource, StudyAccess
from dicomguard.policy.engine import PolicyEngine, PolicyError, default_policy_files, install_default_policies

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
RECENT = NOW - timedelta(days=1)
OLD = NOW - timedelta(days=30)


@pytest.fixture(scope="module")
def engine() -> PolicyEngine:
    return PolicyEngine.defaults()


def user(name: str, *roles: str, **attributes: object) -> Principal:
    return Principal(PrincipalKind.USER, name, frozenset(roles), attributes=attributes)


def device(ae: str, *operations: str, department: str = "") -> Principal:
    return Principal(PrincipalKind.DEVICE, ae, attributes={"operations": operations, "department": department})


def study(department: str = "RADIOLOGY", *, patient: str = "p1", labels: frozenset[str] = frozenset(),
          modalities: frozenset[str] = frozenset({"CT"}), referring: str = "", stored_at: datetime = RECENT) -> Resource:
    return Resource.study(f"1.2.3.{department}.{patient}", patient, StudyAccess(department, "", labels, modalities, referring, stored_at))


def ctx(**kw: object) -> RequestContext:
    return RequestContext(NOW, **kw)  # type: ignore[arg-type]


RAD = user("dr.rad", "radiologist", department="RADIOLOGY")
CARDIO = user("dr.heart", "cardiologist", department="CARDIOLOGY")


def test_every_shipped_policy_is_named_and_validates(engine: PolicyEngine) -> None:
    files = default_policy_files()
    assert {"radiologist.cedar", "guards.cedar", "break-glass.cedar", "devices.cedar"} <= set(files)
    assert all("#" not in pid for pid in engine.policies), "every shipped policy carries an @id"
    assert {p.file for p in engine.policies.values()} == set(files)


def test_radiologist_reads_own_department_only(engine: PolicyEngine) -> None:
    own = engine.decide(RAD, Action.RETRIEVE, study("RADIOLOGY"), ctx())
    assert own.allowed and own.policies == ("radiologist-read-own-department",)
    other = engine.decide(RAD, Action.RETRIEVE, study("CARDIOLOGY"), ctx())
    assert not other.allowed and other.policies == () and "default deny" in other.reason
    assert not engine.decide(RAD, Action.STORE, Resource.archive(), ctx()).allowed  # read-only role
    assert not engine.decide(RAD, Action.ERASE, Resource.patient("p1"), ctx(mfa_age_s=1)).allowed


def test_user_without_department_reads_nothing_even_unassigned_studies(engine: PolicyEngine) -> None:
    nobody = user("dr.nodept", "radiologist", department="")
    assert not engine.decide(nobody, Action.QUERY, study(""), ctx()).allowed


def test_cardiologist_is_scoped_like_radiologist(engine: PolicyEngine) -> None:
    assert engine.decide(CARDIO, Action.EXPORT, study("CARDIOLOGY"), ctx()).allowed
    assert not engine.decide(CARDIO, Action.QUERY, study("RADIOLOGY"), ctx()).allowed


def test_technologist_stores_and_reads_recent_work_of_own_modality(engine: PolicyEngine) -> None:
    tech = user("t.ct", "technologist", department="RADIOLOGY", modalities=["CT"])
    assert engine.decide(tech, Action.STORE, Resource.archive(), ctx()).allowed
    recent = engine.decide(tech, Action.RETRIEVE, study(stored_at=RECENT), ctx())
    assert recent.allowed and recent.policies == ("technologist-read-recent-own-modality",)
    assert not engine.decide(tech, Action.RETRIEVE, study(stored_at=OLD), ctx()).allowed
    assert not engine.decide(tech, Action.RETRIEVE, study(modalities=frozenset({"MR"})), ctx()).allowed
    assert not engine.decide(tech, Action.EXPORT, study(), ctx()).allowed
    sono = user("s.us", "sonographer", department="RADIOLOGY", modalities=["US"])
    assert engine.decide(sono, Action.QUERY, study(modalities=frozenset({"US", "SR"})), ctx()).allowed


def test_referring_physician_reads_only_referred_studies(engine: PolicyEngine) -> None:
    doc = user("dr.ref", "referring_physician", referring_token="aa" * 16)
    assert engine.decide(doc, Action.RETRIEVE, study("ANY", referring="aa" * 16), ctx()).allowed
    assert not engine.decide(doc, Action.RETRIEVE, study("ANY", referring="bb" * 16), ctx()).allowed
    unset = user("dr.unset", "referring_physician")
    assert not engine.decide(unset, Action.RETRIEVE, study("ANY", referring=""), ctx()).allowed  # "" never matches ""


def test_researcher_security_officer_and_admin_have_no_image_access(engine: PolicyEngine) -> None:
    researcher = user("r.search", "researcher", department="RADIOLOGY")
    assert not engine.decide(researcher, Action.RETRIEVE, study(), ctx()).allowed
    assert engine.decide(researcher, Action.RETRIEVE, study(labels=frozenset({"deidentified"})), ctx()).allowed
    officer = user("s.officer", "security_officer", department="RADIOLOGY")
    admin = user("a.admin", "admin", department="RADIOLOGY")
    for who in (officer, admin):
        assert not engine.decide(who, Action.RETRIEVE, study(), ctx()).allowed
        assert not engine.decide(who, Action.QUERY, study(), ctx()).allowed
    assert engine.decide(officer, Action.AUDIT_READ, Resource("audit-log"), ctx()).allowed
    assert not engine.decide(admin, Action.AUDIT_READ, Resource("audit-log"), ctx()).allowed
    assert engine.decide(admin, Action.ADMINISTER, Resource.archive(), ctx()).allowed
    assert not engine.decide(officer, Action.ADMINISTER, Resource.archive(), ctx()).allowed


def test_devices_do_only_their_registered_operations(engine: PolicyEngine) -> None:
    modality = device("CT1", "echo", "store")
    assert engine.decide(modality, Action.STORE, Resource.archive(), ctx()).allowed
    assert not engine.decide(modality, Action.QUERY, study(), ctx()).allowed  # write-only
    assert not engine.decide(modality, Action.RETRIEVE, study(), ctx()).allowed
    viewer = device("VIEW1", "query", "retrieve", department="CARDIOLOGY")
    assert engine.decide(viewer, Action.QUERY, study("CARDIOLOGY"), ctx()).allowed
    assert not engine.decide(viewer, Action.RETRIEVE, study("RADIOLOGY"), ctx()).allowed
    assert not engine.decide(viewer, Action.STORE, Resource.archive(), ctx()).allowed
    pacs = device("PACS", "query", "retrieve")  # registered archive-wide
    assert engine.decide(pacs, Action.RETRIEVE, study("RADIOLOGY"), ctx()).allowed
    assert not engine.decide(pacs, Action.ERASE, Resource.patient("p1"), ctx()).allowed


def test_operator_holds_the_keys_and_may_do_everything(engine: PolicyEngine) -> None:
    op = Principal.operator()
    for action, res in ((Action.ERASE, Resource.patient("p1")), (Action.RETRIEVE, study("X", labels=frozenset({"vip"})))):
        d = engine.decide(op, action, res, ctx())
        assert d.allowed and d.policies == ("operator-all",)


def test_vip_studies_need_clearance_or_break_glass(engine: PolicyEngine) -> None:
    vip = study(labels=frozenset({"vip"}))
    denied = engine.decide(RAD, Action.RETRIEVE, vip, ctx())
    assert not denied.allowed and denied.policies == ("vip-needs-clearance",) and not denied.step_up
    cleared = user("dr.vip", "radiologist", department="RADIOLOGY", clearances=["vip"])
    assert engine.decide(cleared, Action.RETRIEVE, vip, ctx()).allowed
    assert engine.decide(RAD, Action.RETRIEVE, vip, ctx(emergency_patients=frozenset({"p1"}))).allowed


def test_break_glass_claim_and_emergency_read(engine: PolicyEngine) -> None:
    assert engine.decide(CARDIO, Action.BREAK_GLASS, Resource.patient("p1"), ctx()).allowed
    for role in ("security_officer", "admin", "researcher"):
        assert not engine.decide(user("x.y", role), Action.BREAK_GLASS, Resource.patient("p1"), ctx()).allowed
    assert not engine.decide(device("PACS", "query", "retrieve"), Action.BREAK_GLASS, Resource.patient("p1"), ctx()).allowed
    grant = ctx(emergency_patients=frozenset({"p1"}))
    d = engine.decide(CARDIO, Action.RETRIEVE, study("RADIOLOGY", patient="p1"), grant)
    assert d.allowed and d.break_glass and d.policies == ("break-glass-emergency-read",)
    assert not engine.decide(CARDIO, Action.RETRIEVE, study("RADIOLOGY", patient="p2"), grant).allowed  # that patient only
    assert not engine.decide(CARDIO, Action.EXPORT, study("RADIOLOGY", patient="p1"), grant).allowed  # read, not export
    own = engine.decide(CARDIO, Action.RETRIEVE, study("CARDIOLOGY", patient="p1"), grant)
    assert own.allowed and own.break_glass  # both policies permit: the access is still marked


def test_step_up_guards(engine: PolicyEngine) -> None:
    admin = user("a.admin", "admin")
    stale = engine.decide(admin, Action.ERASE, Resource.patient("p1"), ctx(mfa_age_s=301))
    assert not stale.allowed and stale.step_up and stale.policies == ("step-up-erase",)
    assert engine.decide(admin, Action.ERASE, Resource.patient("p1"), ctx(mfa_age_s=30)).allowed
    assert not engine.decide(admin, Action.ERASE, Resource.patient("p1"), RequestContext(NOW)).allowed  # no session: never fresh
    bulk = engine.decide(RAD, Action.RETRIEVE, study(), ctx(studies_in_window=21))
    assert not bulk.allowed and bulk.step_up and bulk.policies == ("step-up-bulk-retrieve",)
    assert engine.decide(RAD, Action.RETRIEVE, study(), ctx(studies_in_window=20)).allowed
    assert engine.decide(RAD, Action.RETRIEVE, study(), ctx(studies_in_window=500, mfa_age_s=10)).allowed
    assert engine.decide(RAD, Action.QUERY, study(), ctx(studies_in_window=500)).allowed  # queries are not bulk exfiltration


def test_step_up_cannot_lift_a_real_forbid(engine: PolicyEngine) -> None:
    """A VIP study refused and over the bulk threshold: a fresh MFA would not help, so it is not a step-up refusal."""
    d = engine.decide(RAD, Action.RETRIEVE, study(labels=frozenset({"vip"})), ctx(studies_in_window=50))
    assert not d.allowed and not d.step_up
    assert set(d.policies) == {"vip-needs-clearance", "step-up-bulk-retrieve"}


def test_study_without_access_attributes_is_denied(engine: PolicyEngine) -> None:
    bare = Resource("instance", "1.2.3.4", "1.2.3", "p1", "CT")
    d = engine.decide(Principal.operator(), Action.RETRIEVE, bare, ctx())
    assert not d.allowed and "access attributes" in d.reason


def test_decide_many_matches_single_decisions(engine: PolicyEngine) -> None:
    resources = [study(dep, patient=f"p{i}") for i, dep in enumerate(["RADIOLOGY", "CARDIOLOGY", "RADIOLOGY", ""])]
    batch = engine.decide_many(RAD, Action.QUERY, resources, ctx())
    assert [d.allowed for d in batch] == [True, False, True, False]
    assert batch == [engine.decide(RAD, Action.QUERY, r, ctx()) for r in resources]


# -- loading and validation -----------------------------------------------------------


def _folder(tmp_path: Path, **files: str) -> Path:
    folder = tmp_path / "policies"
    install_default_policies(folder)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_installed_defaults_load_like_the_shipped_set(tmp_path: Path) -> None:
    loaded = PolicyEngine.load(_folder(tmp_path))
    assert set(loaded.policies) == set(PolicyEngine.defaults().policies)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('permit (principal, action, resource', "does not parse"),
        ('permit (principal is User, action == Action::"retrieve", resource is Study) when { principal.salary > 3 };',
         "does not validate"),
        ('permit (principal, action == Action::"teleport", resource);', "does not validate"),
        ('@id("radiologist-read-own-department")\npermit (principal is Operator, action, resource);', "already used"),
        ('permit (principal == ?principal, action, resource);', "templates"),
    ],
    ids=["syntax", "unknown-attribute", "unknown-action", "duplicate-id", "template"],
)
def test_invalid_policy_file_refuses_to_load(tmp_path: Path, text: str, message: str) -> None:
    folder = _folder(tmp_path, **{"zz-local.cedar": text})
    with pytest.raises(PolicyError, match=message) as info:
        PolicyEngine.load(folder)
    assert "zz-local.cedar" in str(info.value)


def test_missing_or_empty_policy_folder_refuses_to_load(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="does not exist"):
        PolicyEngine.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PolicyError, match="no .cedar files"):
        PolicyEngine.load(tmp_path / "empty")


def test_evaluation_error_denies_even_where_cedar_would_permit(tmp_path: Path) -> None:
    """Cedar skips an erroring policy; a skipped forbid must not turn into a permit (fail closed)."""
    overflow = 'forbid (principal, action, resource) when { context.now * 9223372036854775807 > 0 };'
    folder = _folder(tmp_path, **{"zz-overflow.cedar": overflow})
    d = PolicyEngine.load(folder).decide(Principal.operator(), Action.STORE, Resource.archive(), ctx())
    assert not d.allowed and "evaluation error" in d.reason


def test_local_policy_extends_defaults(tmp_path: Path) -> None:
    """An administrator's own file: radiologists of RADIOLOGY may also read NEURO studies."""
    extra = ('@id("neuro-reading-for-radiology")\n'
             'permit (principal is User, action in [Action::"query", Action::"retrieve"], resource is Study)\n'
             'when { principal.roles.contains("radiologist") && principal.department == "RADIOLOGY" '
             '&& resource.department == "NEURO" };')
    loaded = PolicyEngine.load(_folder(tmp_path, **{"local.cedar": extra}))
    d = loaded.decide(RAD, Action.RETRIEVE, study("NEURO"), ctx())
    assert d.allowed and d.policies == ("neuro-reading-for-radiology",)
    assert loaded.policies["neuro-reading-for-radiology"].file == "local.cedar"
    assert not loaded.decide(CARDIO, Action.RETRIEVE, study("NEURO"), ctx()).allowed


def test_scoped_token_is_limited_before_any_policy(tmp_path: Path) -> None:
    """No policy edit can widen a scoped token: even an allow-everything policy set."""
    allow_all = PolicyEngine({"all.cedar": '@id("everything")\npermit (principal, action, resource);'})
    scoped = user("svc.up", "radiologist", department="RADIOLOGY", token_scopes=("store",))
    assert allow_all.decide(scoped, Action.STORE, Resource.archive(), ctx()).allowed
    d = allow_all.decide(scoped, Action.RETRIEVE, study(), ctx())
    assert not d.allowed and d.policies == ("token-scope",) and "limited to store" in d.reason
    nothing = user("svc.none", "radiologist", token_scopes=())
    assert not allow_all.decide(nothing, Action.STORE, Resource.archive(), ctx()).allowed
    assert allow_all.decide(user("svc.all", "radiologist"), Action.RETRIEVE, study(), ctx()).allowed  # unscoped


# -- recent answers ----------------------------------------------------------------------------------------------

ADMIN = user("it.admin", "admin")
ASKS = [
    (RAD, Action.RETRIEVE, study("RADIOLOGY"), ctx()),
    (RAD, Action.RETRIEVE, study("CARDIOLOGY"), ctx()),  # another resource attribute
    (CARDIO, Action.RETRIEVE, study("RADIOLOGY"), ctx()),  # another principal
    (RAD, Action.RETRIEVE, study(), ctx(studies_in_window=500)),  # another context: a step-up
    (RAD, Action.RETRIEVE, study(), ctx(studies_in_window=500, mfa_age_s=10)),
    (ADMIN, Action.ERASE, Resource.patient("p1"), ctx(mfa_age_s=301)),
    (ADMIN, Action.ERASE, Resource.patient("p1"), ctx(mfa_age_s=30)),
    (ADMIN, Action.ERASE, Resource.patient("p1"), RequestContext(NOW + timedelta(seconds=1), mfa_age_s=30)),
    (device("CT1", "store", department="RADIOLOGY"), Action.STORE, Resource.archive(), ctx()),
]


def test_a_request_asked_again_gets_the_answer_a_fresh_engine_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    import cedarpy

    fresh = [PolicyEngine.defaults().decide(*ask) for ask in ASKS]  # each from an engine that remembers nothing
    assert len({(d.allowed, d.step_up, d.policies) for d in fresh}) >= 4  # the asks differ in what they get
    engine = PolicyEngine.defaults()
    evaluated: list[int] = []
    real = cedarpy.is_authorized_batch
    monkeypatch.setattr(cedarpy, "is_authorized_batch", lambda requests, *rest: evaluated.append(len(requests)) or real(requests, *rest))
    first = [engine.decide(*ask) for ask in ASKS]
    assert first == fresh and len(evaluated) >= len(ASKS)  # every differing input was evaluated
    before = len(evaluated)
    assert [engine.decide(*ask) for ask in reversed(ASKS)] == list(reversed(fresh))
    assert len(evaluated) == before  # asked again with exactly the same inputs: answered as before, not evaluated


def test_batches_are_always_evaluated_and_recent_answers_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import cedarpy

    from dicomguard.policy import engine as policy_engine

    engine = PolicyEngine.defaults()
    evaluated: list[int] = []
    real = cedarpy.is_authorized_batch
    monkeypatch.setattr(cedarpy, "is_authorized_batch", lambda requests, *rest: evaluated.append(len(requests)) or real(requests, *rest))
    studies = [study("RADIOLOGY", patient=f"p{i}") for i in range(3)]
    assert engine.decide_many(RAD, Action.RETRIEVE, studies, ctx()) == engine.decide_many(RAD, Action.RETRIEVE, studies, ctx())
    assert evaluated == [3, 3]
    for i in range(policy_engine.RECENT_ANSWERS + 20):
        engine.decide(RAD, Action.QUERY, study(), ctx(studies_in_window=i))
    assert len(engine._answers) == policy_engine.RECENT_ANSWERS


def test_a_reloaded_policy_set_answers_for_itself(tmp_path: Path) -> None:
    install_default_policies(tmp_path)
    permitted = PolicyEngine.load(tmp_path)
    ask = (RAD, Action.RETRIEVE, study("RADIOLOGY"), ctx())
    assert permitted.decide(*ask).allowed
    (tmp_path / "local.cedar").write_text('@id("no-reading")\nforbid (principal, action == Action::"retrieve", resource);\n')
    assert not PolicyEngine.load(tmp_path).decide(*ask).allowed  # a new engine, nothing remembered from the old one
    assert permitted.decide(*ask).allowed
