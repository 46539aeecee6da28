"""Every CLI command and every HTTP route is classified, and every action leaves exactly one recorded action.

A *recorded action* is one ledger leaf, committed with the audit record(s) it
binds (``"audit": [[id, sha256], ...]``) in the transaction of the change
(``app/recorder.py``). Each state-changing or PHI-reading command and route is
run here against a real archive and must add exactly one leaf binding exactly
its new audit records: one record, or two for an erasure (PS3.15 A.5.3.8 Study
Deleted and A.5.3.15 Patient Record). Everything else names why it records
nothing. A new command or route fails :func:`test_cli_inventory_is_complete` /
:func:`test_route_inventory_is_complete` until it is classified here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from dicomguard.cli.main import app as cli_app
from dicomguard.core.access import Principal
from dicomguard.core.keyring import PURPOSE_IDENTITY
from dicomguard.identity import users
from dicomguard.identity.tokens import create_token
from dicomguard.index.db import read_session, write_session
from dicomguard.index.models import AuditRecord, LedgerLeaf
from dicomguard.ledger.leaves import audit_hashes, decode
from dicomguard.pki.devices import DeviceRegistry
from dicomguard.pki.store import load_tls_material
from dicomguard.web.app import create_app
from tests.detect_fhir.test_fhir_context import transaction_bundle
from tests.dicom_factory import ALICE, BOB, CAROL, DEPARTMENT, ct_series, dataset_of, to_bytes
from tests.identity.conftest import Account, add_user
from tests.web.multipart_util import encode

runner = CliRunner()

# -- what records nothing, and why ------------------------------------------------------------

NOT_RECORDED_CLI = {
    "serve": "runs the services; its start and stop are Application Activity records (tests/audit/test_actions.py)",
    "gateway": "runs the gateway; its start and stop are Application Activity records",
    "audit listen": "runs the syslog-TLS listener; its start and stop, and every message it imports, are recorded",
    "context listen-hl7": "runs the HL7 v2 MLLP listener; its start and stop, every batch of messages it applies (one "
                          "ContextImported each, tests/detect_hl7/test_feed.py) and every refused sender are recorded",
    "gateway status": "reads the gateway's status file: opens no archive, reads no PHI",
    "gateway requeue": "moves the gateway's own encrypted dead letters back into its queue: opens no archive, reads no PHI",
    "audit status": "counts records and forwarding lag: no PHI, nothing changed",
    "policy check": "validates policy files on disk: opens no archive",
    "policy list": "lists policy files on disk: opens no archive",
    "policy test": "explains one decision from access attributes: no PHI, nothing changed (decided: policy-read)",
    "ledger checkpoint": "hands out the signed checkpoint of the log (no PHI)",
    "ledger prove": "an inclusion proof of one object's leaf: UIDs and digests, no PHI",
    "ledger public-key": "the log's public verifier key",
    "ledger check-proof": "checks a proof bundle offline: opens no archive",
    "device list": "lists enrolled devices: no PHI, nothing changed (decided: device-read)",
    "user list": "lists accounts without secrets: no PHI, nothing changed (decided: account-read)",
    "gateway list": "lists the allow-list: no PHI, nothing changed (decided: allowlist-read)",
    "patient conflicts": "lists patient-identity conflicts by surrogate reference: no PHI, nothing changed (decided: patient-conflicts-read)",
    "backup list": "lists snapshot ids of the targets: no PHI, nothing changed (decided: backup-read)",
    "alerts list": "lists alerts without their patients or explanation: no PHI, nothing changed (decided: alerts-read)",
    "detect": "scores the operator's own audit files offline: opens no archive, reads no archived PHI",
    "backup status": "reads the backup runs and the 3-2-1-1-0 rules: no PHI, nothing changed (decided: backup-read)",
    "share list": "lists the caller's share links (ids, study UIDs, states): no PHI, nothing changed (decided: share-read)",
    "share show": "one link and its uses (times, addresses): no PHI, nothing changed (decided: share-read)",
    "share queue": "lists transfers to peers (states, counts): no PHI, nothing changed (decided: peer-read)",
    "peer list": "lists peer archives: no PHI, nothing changed (decided: peer-read)",
    "posture": "evaluates configuration and records against NIST CSF 2.0 and HIPAA: no PHI, nothing changed (decided: posture-read)",
    "review list": "lists log reviews with their counts and sign-off: no PHI, nothing changed (decided: log-review)",
    "risk list": "the register and the risks derived from the posture: no PHI, nothing changed (decided: risk-read)",
    "assets": "devices, storage, backup targets, privileged accounts: no PHI, nothing changed (decided: risk-read)",
    "incident list": "lists incidents (titles, states): no PHI, nothing changed (decided: incident-read)",
    "incident show": "one incident's timeline (accounts, devices, counts): no PHI, nothing changed (decided: incident-read)",
}
NOT_RECORDED_ROUTES = {
    ("GET", "/healthz"): "liveness only: no authentication, no data",
    ("GET", "/openapi.json"): "the API description",
    ("GET", "/metrics"): "activity counters by route template: no PHI, nothing changed (decided: metrics-read)",
    ("POST", "/auth/refresh"): "renews the tokens of a recorded login session; a reused refresh token is recorded (it ends the session)",
    ("GET", "/admin/users"): "lists accounts without secrets: no PHI, nothing changed (decided: account-read)",
    ("GET", "/admin/devices"): "lists enrolled devices: no PHI, nothing changed (decided: device-read)",
    ("GET", "/admin/gateway/allow-list"): "lists the allow-list: no PHI, nothing changed (decided: allowlist-read)",
    ("GET", "/shares"): "lists the caller's share links: no PHI, nothing changed (decided: share-read)",
    ("GET", "/shares/{share_id}"): "one link and its uses: no PHI, nothing changed (decided: share-read)",
    ("GET", "/s/{token}"): "the PIN page, the same for every token: no data",
    ("GET", "/s/static/share.css"): "the recipient pages' stylesheet",
    ("POST", "/s/logout"): "ends a recipient's session (its opening is recorded)",
}
VIEWER_ROUTES = ("the OHIF viewer (/viewer, its generated configuration and its static files, one route per installed file): public "
                 "code and no PHI, behind the archive's authentication; what it then reads through /dicomweb is recorded there")
ROUTES_RECORDED_ELSEWHERE = {
    # Share links need a session cookie over HTTPS: one recorded action each is checked in tests/sharing/test_share_actions.py.
    ("POST", "/shares"): "share-created", ("POST", "/shares/{share_id}/revoke"): "share-revoked",
    ("POST", "/s/{token}"): "user-authentication (the recipient's login)", ("GET", "/s/view"): "query",
    ("GET", "/s/download"): "export",
    # Incident routes need a security officer's login session with a fresh TOTP: tests/incident_response/test_actions.py.
    ("POST", "/incidents"): "incident", ("POST", "/incidents/{incident_id}/contain"): "incident",
    ("POST", "/incidents/{incident_id}/release"): "incident", ("POST", "/incidents/{incident_id}/close"): "incident",
    ("GET", "/incidents/{incident_id}/report"): "incident (the draft is a recorded step)",
    ("POST", "/incidents/{incident_id}/scope"): "audit-log-used and incident (two actions)",
    ("GET", "/incidents"): "nothing (lists incidents: no PHI)", ("GET", "/incidents/{incident_id}"): "nothing (a timeline: no PHI)",
}

# The console needs a browser session over HTTPS: each route's one recorded action (or none) is checked in
# tests/console/test_console_actions.py.
CONSOLE_ROUTES = {
    ("GET", "/console/"): "nothing (a redirect to the user's first page)", ("GET", "/console/login"): "nothing (the sign-in form)",
    ("GET", "/console/static/console.css"): "nothing (the stylesheet)", ("GET", "/console/static/icon.svg"): "nothing (the icon)",
    ("POST", "/console/login"): "user-authentication", ("POST", "/console/logout"): "user-authentication (logout)",
    ("GET", "/console/overview"): "nothing (counts and posture: no PHI; decided: audit-read)",
    ("GET", "/console/alerts"): "nothing (alerts without patients; decided: alerts-read)",
    ("GET", "/console/alerts/{alert_id}"): "alert-handled (viewed: it shows PHI)",
    ("POST", "/console/alerts/{alert_id}/contain"): "alert-handled", ("POST", "/console/alerts/{alert_id}/release"): "alert-handled",
    ("POST", "/console/alerts/{alert_id}/handle"): "alert-handled",
    ("GET", "/console/audit"): "nothing (the empty search form; decided: audit-read)", ("POST", "/console/audit"): "audit-log-used",
    ("GET", "/console/audit/patient"): "nothing (the empty form; decided: audit-read)",
    ("POST", "/console/audit/patient"): "audit-log-used",
    ("GET", "/console/people"): "nothing (accounts without secrets)", ("GET", "/console/devices"): "nothing (devices, allow-list)",
    ("POST", "/console/people/{name}/{action}"): "account change", ("POST", "/console/devices/{ae_title}/revoke"): "device revoked",
    ("POST", "/console/devices/allow-list"): "allow-list change",
    ("GET", "/console/incidents"): "nothing (no PHI)", ("GET", "/console/incidents/{incident_id}"): "nothing (a timeline: no PHI)",
    ("GET", "/console/risks"): "nothing (no PHI)", ("GET", "/console/posture"): "nothing (no PHI)",
    ("GET", "/console/backups"): "nothing (no PHI)", ("GET", "/console/studies"): "nothing (the empty search form)",
    ("GET", "/console/shares"): "nothing (one's own links: no PHI)",
    ("POST", "/console/studies"): "query", ("POST", "/console/studies/share"): "query (the study the form names)",
    ("POST", "/console/shares"): "share-created", ("POST", "/console/shares/{share_id}/revoke"): "share-revoked",
}


def _cli_commands(command, prefix: str = "") -> set[str]:  # type: ignore[no-untyped-def]
    """Every runnable command path (a group that runs without a subcommand is one too)."""
    if hasattr(command, "commands"):
        found = {prefix} if prefix and command.invoke_without_command else set()
        for name, sub in command.commands.items():
            found |= _cli_commands(sub, f"{prefix} {name}".strip())
        return found
    return {prefix}


def _routes(archive) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """Every route the application serves, with its methods (HEAD and OPTIONS are not actions)."""
    found: set[tuple[str, str]] = set()

    def walk(routes, prefix: str) -> None:  # type: ignore[no-untyped-def]
        for route in routes:
            included = getattr(route, "original_router", None)  # FastAPI >= 0.165 wraps included routers
            if included is not None:
                walk(included.routes, prefix + route.include_context.prefix)
                continue
            if getattr(getattr(route, "endpoint", None), "__module__", "") == "dicomguard.web.viewer":
                continue  # VIEWER_ROUTES: the OHIF app's files, one route each
            for method in getattr(route, "methods", None) or ():
                if method not in ("HEAD", "OPTIONS"):
                    found.add((method, prefix + route.path))

    walk(create_app(archive).routes, "")
    return found


# -- counting what one action leaves ------------------------------------------------------------


def _state(archive) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    with read_session(archive.ctx.engine) as s:
        return (s.scalar(select(func.count()).select_from(LedgerLeaf)) or 0, s.scalar(select(func.count()).select_from(AuditRecord)) or 0)


def _check_one_action(archive, before: tuple[int, int], records: int, what: str) -> None:  # type: ignore[no-untyped-def]
    """Exactly one new leaf, binding exactly the new audit records (``records`` of them)."""
    leaves_before, records_before = before
    with read_session(archive.ctx.engine) as s:
        leaves = list(s.scalars(select(LedgerLeaf).where(LedgerLeaf.idx >= leaves_before).order_by(LedgerLeaf.idx)))
        new_ids = set(s.scalars(select(AuditRecord.id).where(AuditRecord.seq > records_before)))
    assert len(leaves) == 1, f"{what}: {len(leaves)} ledger leaves, expected one action"
    bound = {record_id for record_id, _ in audit_hashes(decode(leaves[0].data))}
    assert len(new_ids) == records and bound == new_ids, f"{what}: records {len(new_ids)} (expected {records}), bound {len(bound)}"


def _check_nothing(archive, before: tuple[int, int], what: str) -> None:  # type: ignore[no-untyped-def]
    assert _state(archive) == before, f"{what} recorded something it says it does not"


# -- the world the commands run in -------------------------------------------------------------


@dataclass
class World:
    study: str
    series: str
    sop: str
    files: Path


@pytest.fixture
def world(archive, tmp_path: Path) -> World:  # type: ignore[no-untyped-def]
    objects = ct_series(ALICE, n=2)
    for d in objects:
        archive.operator.store.ingest(d)
    # Carol under two names: a patient-identity conflict (number 1) to reconcile
    archive.operator.store.ingest(ct_series(CAROL, n=1, seed=7)[0])
    renamed = dataset_of(ct_series(CAROL, n=1, seed=8)[0])
    renamed.PatientName = "OCELOTTE^CAROLINE"
    archive.operator.store.ingest(to_bytes(renamed))
    ds = dataset_of(objects[0])
    with (archive.home / "config.toml").open("a", encoding="utf-8") as f:  # a backup target for the backup commands
        nas = tmp_path / "nas"
        f.write(f'\n[[backup.target]]\nname = "nas"\nkind = "folder"\nlocation = "{nas}"\n')
    files = tmp_path / "files"
    files.mkdir()
    (files / "users.csv").write_text("user_id,name,role,department,home_address\ndr.x,Xavier Doe,radiologist,RADIOLOGY,1 Main St\n")
    (files / "context.json").write_bytes(transaction_bundle())  # FHIR R4: users, patients and orders
    (files / "bob.dcm").write_bytes(ct_series(BOB, n=1, seed=5)[0])
    with write_session(archive.ctx.engine) as s:  # set-up straight into the index: not actions under test
        identity = archive.ctx.keyring.archive_key(PURPOSE_IDENTITY)
        users.create_user(s, identity, "dr.x", "radiologist", department=DEPARTMENT)
        users.create_user(s, identity, "dr.y", "radiologist", department=DEPARTMENT)
        material = load_tls_material(archive.home, archive.settings, archive.ctx.keyring)
        DeviceRegistry.add(s, "CT9", "ct nine", authority=material.authority, ca_pem=material.client_ca_pem)
    # an alert (number 1) that contained dr.x, raised by the detector: set-up, not an action under test
    archive.services(Principal.operator("detector")).detection.raise_alert(
        "dr.x", "bulk-retrieve", "high", datetime.now(UTC), datetime.now(UTC), (ALICE.patient_id,), "unexplained bulk access", [])
    return World(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, files)


# -- the command line ---------------------------------------------------------------------------

Step = Callable[[World, Path], list[str]]
CLI_RECORDED: list[tuple[str, Step, int]] = [
    # (command, argv from the world and a scratch folder, audit records of its one action)
    ("import", lambda w, t: ["import", str(w.files / "bob.dcm")], 1),
    ("export", lambda w, t: ["export", str(t / "out"), "--study", w.study], 1),
    ("deid", lambda w, t: ["deid", str(w.files / "bob.dcm"), "--out", str(t / "deid")], 1),
    ("ls", lambda w, t: ["ls", "studies", "--json"], 1),
    ("show", lambda w, t: ["show", w.study, "--json"], 1),
    ("study label", lambda w, t: ["study", "label", w.study, "--add", "teaching"], 1),
    ("study department", lambda w, t: ["study", "department", w.study, "CARDIOLOGY"], 1),
    ("user add", lambda w, t: ["user", "add", "dr.new", "--role", "radiologist", "--json"], 1),
    ("user set", lambda w, t: ["user", "set", "dr.x", "--site", "north"], 1),
    ("user disable", lambda w, t: ["user", "disable", "dr.y"], 1),
    ("user enable", lambda w, t: ["user", "enable", "dr.y"], 1),
    ("user unlock", lambda w, t: ["user", "unlock", "dr.x"], 1),
    ("user grant", lambda w, t: ["user", "grant", "dr.x", "--role", "researcher"], 1),
    ("user revoke", lambda w, t: ["user", "revoke", "dr.x", "--role", "researcher"], 1),
    ("user reset-mfa", lambda w, t: ["user", "reset-mfa", "dr.x", "--json"], 1),
    ("user recovery-codes", lambda w, t: ["user", "recovery-codes", "dr.x", "--json"], 1),
    ("token create", lambda w, t: ["token", "create", "--user", "dr.x"], 1),
    ("token revoke", lambda w, t: ["token", "revoke", "--user", "dr.x"], 1),
    ("device add", lambda w, t: ["device", "add", "--ae", "CT10", "--name", "ct ten", "--out", str(t / "ct10")], 1),
    ("device revoke", lambda w, t: ["device", "revoke", "--ae", "CT10"], 1),
    ("gateway allow", lambda w, t: ["gateway", "allow", "--ae", "OLDCT", "--ip", "10.1.2.3"], 1),
    ("gateway deny", lambda w, t: ["gateway", "deny", "--ae", "OLDCT"], 1),
    ("audit search", lambda w, t: ["audit", "search", "--user", "dr.x"], 1),
    ("audit report", lambda w, t: ["audit", "report", "--out", str(t / "report.html")], 1),
    ("audit export", lambda w, t: ["audit", "export", "--format", "dicom", "--out", str(t / "audit.xml")], 1),
    ("audit import", lambda w, t: ["audit", "import", str(t / "audit-one.xml")], 1),
    ("verify", lambda w, t: ["verify", "--json"], 1),
    ("index backfill", lambda w, t: ["index", "backfill", "--json"], 1),
    ("ledger witness", lambda w, t: ["ledger", "witness", "--import", str(t / "checkpoint.txt")], 1),
    ("keys rotate", lambda w, t: ["keys", "rotate"], 1),
    ("keys recovery-key", lambda w, t: ["keys", "recovery-key", "--replace"], 1),
    ("patient resolve", lambda w, t: ["patient", "resolve", "1", "--as", "same-person", "--reason", "name corrected"], 1),
    ("context import", lambda w, t: ["context", "import", "users", str(w.files / "users.csv")], 1),
    ("context import-fhir", lambda w, t: ["context", "import-fhir", str(w.files / "context.json")], 1),
    ("alerts show", lambda w, t: ["alerts", "show", "1"], 1),
    ("alerts ack", lambda w, t: ["alerts", "ack", "1", "--note", "looking"], 1),
    ("alerts resolve", lambda w, t: ["alerts", "resolve", "1", "--disposition", "true-positive"], 1),
    ("alerts release", lambda w, t: ["alerts", "release", "dr.x", "--reason", "interviewed, cleared by the DPO"], 1),
    ("backup run", lambda w, t: ["backup", "run", "--json"], 1),
    ("backup drill", lambda w, t: ["backup", "drill", "--json"], 1),
    ("share create", lambda w, t: ["share", "create", "--study", w.study, "--to", "Dr. Who, second opinion", "--recipient",
                                   "internal", "--json"], 1),
    ("share revoke", lambda w, t: ["share", "revoke", _last_share(t), "--reason", "sent to the wrong colleague"], 1),
    ("peer add", lambda w, t: ["peer", "add", "site-b", "--url", "https://127.0.0.1:9/dicomweb", "--ca", str(t / "peer-ca.pem")], 1),
    ("peer remove", lambda w, t: ["peer", "remove", "site-b"], 1),
    ("incident open", lambda w, t: ["incident", "open", "--title", "dr.y's account used at night"], 1),
    ("incident contain", lambda w, t: ["incident", "contain", "1", "--user", "dr.y", "--reason", "night-time bulk reads"], 1),
    ("incident release", lambda w, t: ["incident", "release", "1", "--step", "2", "--reason", "the account holder was on call"], 1),
    ("incident notify", lambda w, t: ["incident", "notify", "1", "--sent", "authority", "--note", "phased report"], 1),
    ("incident report", lambda w, t: ["incident", "report", "1", "--format", "gdpr-art33", "--as", "json", "--out", str(t / "r.json")], 1),
    ("incident close", lambda w, t: ["incident", "close", "1", "--reason", "false positive, documented"], 1),
    ("review sign-off", lambda w, t: ["review", "sign-off", "1", "--note", "refusals and exports looked at"], 1),
    ("risk add", lambda w, t: ["risk", "add", "--asset", "CT9", "--threat", "malware", "--likelihood", "3", "--impact", "4",
                               "--owner", "imaging IT"], 1),
    ("risk update", lambda w, t: ["risk", "update", "1", "--status", "accepted"], 1),
    ("assets sanitise", lambda w, t: ["assets", "sanitise", "--media", "old NAS disk 3", "--method", "NIST SP 800-88 destroy",
                                      "--reason", "end of life"], 1),
    ("erase", lambda w, t: ["erase", "--patient", ALICE.patient_id, "--reason", "GDPR art. 17 request", "--yes"], 2),
]


def _last_share(scratch: Path) -> str:
    from dicomguard.app.archive import Archive
    from dicomguard.config import resolve_home
    from tests.conftest import PASSPHRASE

    with Archive.open(resolve_home(), PASSPHRASE) as archive:
        return archive.operator.shares.list()[0].id
CLI_RECORDED_ELSEWHERE = {
    "init": "creates the archive: its first record, checked by test_init_is_the_first_recorded_action",
    "restore": "creates a new home from a snapshot: recorded there (archive-restored), tests/backup/test_backup_cli.py",
    "share send": "queues a study for a peer (share-created) and delivers it (transfer-delivered): tests/sharing/test_site_to_site.py",
    "incident rotate-keys": "two actions: the key rotation (keys-rotated) and its incident step: tests/incident_response/test_actions.py",
    "incident verify": "two actions: the verification (integrity-checked) and its incident step: tests/incident_response/test_actions.py",
    "review assemble": "two actions: the audit-trail read (audit-log-used) and the review: tests/incident_response/test_governance.py",
    "incident letters": "one incident step (letters) after a scope: tests/incident_response/test_drill.py",
    "incident scope": "two actions: the audit-trail read (audit-log-used) and its incident step: tests/incident_response/test_drill.py",
}


def test_cli_inventory_is_complete() -> None:
    commands = _cli_commands(typer.main.get_command(cli_app))
    classified = {c for c, _, _ in CLI_RECORDED} | set(NOT_RECORDED_CLI) | set(CLI_RECORDED_ELSEWHERE)
    assert commands == classified, f"unclassified: {sorted(commands - classified)}; stale: {sorted(classified - commands)}"


def test_every_cli_action_is_one_recorded_action(archive, world: World, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for command, argv, records in CLI_RECORDED:
        if command == "audit import":
            # one message of another system, taken from our own export
            (tmp_path / "audit-one.xml").write_bytes((tmp_path / "audit.xml").read_bytes().splitlines()[0])
        if command == "ledger witness":
            (tmp_path / "checkpoint.txt").write_bytes(archive.ledger.latest_checkpoint())
        if command == "review sign-off":
            archive.operator.governance.assemble_review()  # set-up: the review to sign (two actions of its own)
        if command == "peer add":
            (tmp_path / "peer-ca.pem").write_bytes((archive.home / "tls" / "ca.pem").read_bytes())
        before = _state(archive)
        result = runner.invoke(cli_app, argv(world, tmp_path), catch_exceptions=False)
        assert result.exit_code == 0, f"{command}: {result.output}"
        _check_one_action(archive, before, records, command)
    for command in ("user list", "device list", "gateway list", "audit status", "policy test", "ledger prove", "backup list",
                    "backup status"):
        argv = {"policy test": ["policy", "test", "--principal", "user:dr.x", "--action", "query", "--resource", f"study:{world.study}"],
                "ledger prove": ["ledger", "prove", "--instance", world.sop, "--out", str(tmp_path / "proof.json")]}.get(
            command, command.split())
        before = _state(archive)
        result = runner.invoke(cli_app, argv, catch_exceptions=False)
        assert result.exit_code in (0, 1), f"{command}: {result.output}"
        _check_nothing(archive, before, command)


def test_init_is_the_first_recorded_action(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dicomguard.app.archive import Archive
    from tests.conftest import PASSPHRASE

    home = tmp_path / "new-home"
    monkeypatch.setenv("DICOMGUARD_HOME", str(home))
    assert runner.invoke(cli_app, ["init", "--admin", "boss", "--json"], catch_exceptions=False).exit_code == 0
    with Archive.open(home, PASSPHRASE) as archive:
        _check_one_action(archive, (0, 0), 1, "init")
        (record,) = archive.operator.audit.search(_filter(event="security-alert"))[:1]
    assert "archive created" in (record.message.outcome_description or "") and "boss" in (record.message.outcome_description or "")


def _filter(**kw):  # type: ignore[no-untyped-def]
    from dicomguard.audit.store import AuditFilter

    return AuditFilter(**kw)


def test_administration_and_listings_appear_in_audit_search(archive, world: World, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for argv in (["ls", "patients"], ["show", world.study], ["gateway", "allow", "--ae", "OLDCT", "--ip", "10.1.2.3"],
                 ["gateway", "deny", "--ae", "OLDCT"], ["device", "revoke", "--ae", "CT9"], ["user", "disable", "dr.y"]):
        assert runner.invoke(cli_app, argv, catch_exceptions=False).exit_code == 0, argv
    result = runner.invoke(cli_app, ["audit", "search", "--user", "local-operator", "--format", "json"], catch_exceptions=False)
    found = json.loads(result.stdout)
    queries = [e for e in found if e["event"] == "query"]
    assert len(queries) == 2  # ls and show
    changes = [e["description"] for e in found if e["event"] == "security-alert"]
    for expected in ("OLDCT at 10.1.2.3 allowed", "OLDCT at every address denied", "device certificate revoked", "account disabled"):
        assert any(expected in c for c in changes), (expected, changes)


# -- HTTPS --------------------------------------------------------------------------------------


@dataclass
class Http:
    client: TestClient
    tokens: dict[str, str]
    accounts: dict[str, Account]

    def call(self, method: str, path: str, who: str | None, **kw):  # type: ignore[no-untyped-def]
        headers = kw.pop("headers", {}) | ({"Authorization": f"Bearer {self.tokens[who]}"} if who else {})
        return self.client.request(method, path, headers=headers, **kw)


RouteStep = tuple[str, str, str | None, dict, int, int]
"""(method, path, who, request keywords, expected HTTP status, audit records of its one action)"""


def _route_steps(w: World, tech_body: tuple[str, bytes], other_study: tuple[str, bytes], other_study_uid: str) -> list[RouteStep]:
    s, se, i = w.study, w.series, w.sop
    base = f"/dicomweb/studies/{s}/series/{se}/instances/{i}"
    json_accept = {"headers": {"Accept": "application/dicom+json"}}
    return [
        ("POST", "/dicomweb/studies", "tech", {"content": tech_body[1], "headers": {"Content-Type": tech_body[0]}}, 200, 1),
        ("POST", "/dicomweb/studies/{study}", "tech", {"content": other_study[1], "headers": {"Content-Type": other_study[0]},
                                                       "path": f"/dicomweb/studies/{other_study_uid}"}, 200, 1),
        ("GET", "/dicomweb/studies", "rad", json_accept, 200, 1),
        ("GET", "/dicomweb/series", "rad", json_accept, 200, 1),
        ("GET", "/dicomweb/instances", "rad", json_accept, 200, 1),
        ("GET", "/dicomweb/studies/{study}/series", "rad", json_accept | {"path": f"/dicomweb/studies/{s}/series"}, 200, 1),
        ("GET", "/dicomweb/studies/{study}/instances", "rad", json_accept | {"path": f"/dicomweb/studies/{s}/instances"}, 200, 1),
        ("GET", "/dicomweb/studies/{study}/series/{series}/instances", "rad",
         json_accept | {"path": f"/dicomweb/studies/{s}/series/{se}/instances"}, 200, 1),
        ("GET", "/dicomweb/studies/{study}", "rad", {"path": f"/dicomweb/studies/{s}"}, 200, 1),
        ("GET", "/dicomweb/studies/{study}/series/{series}", "rad", {"path": f"/dicomweb/studies/{s}/series/{se}"}, 200, 1),
        ("GET", "/dicomweb/studies/{study}/series/{series}/instances/{instance}", "rad", {"path": base}, 200, 1),
        ("GET", "/dicomweb/studies/{study}/metadata", "rad", json_accept | {"path": f"/dicomweb/studies/{s}/metadata"}, 200, 1),
        ("GET", "/dicomweb/studies/{study}/series/{series}/metadata", "rad",
         json_accept | {"path": f"/dicomweb/studies/{s}/series/{se}/metadata"}, 200, 1),
        ("GET", "/dicomweb/studies/{study}/series/{series}/instances/{instance}/metadata", "rad",
         json_accept | {"path": f"{base}/metadata"}, 200, 1),
        ("GET", "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}", "rad",
         {"path": f"{base}/frames/1", "headers": {"Accept": "multipart/related; type=\"application/octet-stream\""}}, 200, 1),
        ("GET", "/dicomweb/studies/{study}/series/{series}/instances/{instance}/bulkdata/{tag}", "rad",
         {"path": f"{base}/bulkdata/7FE00010", "headers": {"Accept": "multipart/related; type=\"application/octet-stream\""}}, 200, 1),
        ("GET", "/dicomweb/studies/{study}/series/{series}/instances/{instance}/rendered", "rad",
         {"path": f"{base}/rendered", "headers": {"Accept": "image/png"}}, 200, 1),
        ("GET", "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frame}/rendered", "rad",
         {"path": f"{base}/frames/1/rendered", "headers": {"Accept": "image/png"}}, 200, 1),
        ("POST", "/admin/users", "admin", {"json": {"name": "dr.web", "role": "radiologist", "department": DEPARTMENT}}, 201, 1),
        ("PATCH", "/admin/users/{name}", "admin", {"path": "/admin/users/dr.web", "json": {"site": "north"}}, 200, 1),
        ("POST", "/admin/users/{name}/disable", "admin", {"path": "/admin/users/dr.web/disable"}, 204, 1),
        ("POST", "/admin/users/{name}/enable", "admin", {"path": "/admin/users/dr.web/enable"}, 204, 1),
        ("POST", "/admin/users/{name}/unlock", "admin", {"path": "/admin/users/dr.web/unlock"}, 204, 1),
        ("POST", "/admin/users/{name}/roles", "admin", {"path": "/admin/users/dr.web/roles", "json": {"role": "researcher"}}, 200, 1),
        ("DELETE", "/admin/users/{name}/roles/{role}", "admin", {"path": "/admin/users/dr.web/roles/researcher"}, 204, 1),
        ("POST", "/admin/users/{name}/reset-mfa", "admin", {"path": "/admin/users/dr.web/reset-mfa"}, 200, 1),
        ("POST", "/admin/users/{name}/recovery-codes", "admin", {"path": "/admin/users/dr.web/recovery-codes"}, 200, 1),
        ("POST", "/admin/devices", "admin", {"json": {"ae_title": "WEBCT", "name": "ct", "department": DEPARTMENT}}, 201, 1),
        ("POST", "/admin/devices/{ae_title}/revoke", "admin", {"path": "/admin/devices/WEBCT/revoke"}, 204, 1),
        ("POST", "/admin/gateway/allow-list", "admin", {"json": {"ae_title": "OLDUS", "ip": "10.9.8.7"}}, 200, 1),
        ("POST", "/admin/gateway/allow-list/deny", "admin", {"json": {"ae_title": "OLDUS"}}, 200, 1),
        ("POST", "/admin/studies/{study}/access", "admin", {"path": f"/admin/studies/{s}/access", "json": {"add_labels": ["teaching"]}},
         200, 1),
        ("POST", "/auth/break-glass", "cardio", {"json": {"patient_id": ALICE.patient_id, "reason": "trauma bay 2, prior CT needed"}},
         201, 1),
        ("POST", "/auth/step-up", "boss", {"json": {"totp": "<next>"}}, 200, 1),
        ("POST", "/admin/erase", "boss", {"json": {"patient_id": BOB.patient_id, "reason": "GDPR art. 17 request"}}, 200, 2),
        ("POST", "/auth/password", "rad", {"json": {"current_password": "<password>", "new_password": "Lungs-and-hearts-2026",
                                                      "totp": "<next>"}}, 204, 1),
        ("POST", "/auth/logout", "rad", {}, 204, 1),
    ]


def test_route_inventory_is_complete(archive, world: World) -> None:  # type: ignore[no-untyped-def]
    routes = _routes(archive)
    steps = _route_steps(world, ("", b""), ("", b""), "1.2.3")
    classified = {(m, p) for m, p, *_ in steps} | set(NOT_RECORDED_ROUTES) | set(ROUTES_RECORDED_ELSEWHERE) | set(CONSOLE_ROUTES)
    classified |= {("POST", "/auth/login")}
    assert routes == classified, f"unclassified: {sorted(routes - classified)}; stale: {sorted(classified - routes)}"


def _login(http: TestClient, account: Account, steps: int = 0) -> dict:  # type: ignore[type-arg]
    r = http.post("/auth/login", json={"username": account.name, "password": account.password, "totp": account.code(steps)})
    assert r.status_code == 200, r.text
    return r.json()


def test_every_route_action_is_one_recorded_action(archive, world: World) -> None:  # type: ignore[no-untyped-def]
    accounts = {
        "rad": add_user(archive, "dr.rad", "radiologist", department=DEPARTMENT),
        "tech": add_user(archive, "t.ct", "technologist", department=DEPARTMENT),
        "admin": add_user(archive, "it.admin", "admin"),
        "boss": add_user(archive, "it.boss", "admin"),
        "cardio": add_user(archive, "dr.card", "cardiologist", department="CARDIOLOGY"),
    }
    with write_session(archive.ctx.engine) as s:
        users.set_attributes(s, "t.ct", modalities=["CT"])
    client = TestClient(create_app(archive))
    tokens: dict[str, str] = {}
    for who in ("admin", "tech", "cardio"):
        with write_session(archive.ctx.engine) as s:
            tokens[who] = create_token(s, accounts[who].name, timedelta(hours=1))
    for who in ("rad", "boss"):  # login sessions: they can step up, change a password, log out
        before = _state(archive)
        tokens[who] = _login(client, accounts[who])["access_token"]
        _check_one_action(archive, before, 1, "POST /auth/login")
    http = Http(client, tokens, accounts)
    stow = encode(ct_series(ALICE, n=1, seed=11))
    bob = ct_series(BOB, n=1, seed=7)
    for method, template, who, kw, status, records in _route_steps(world, stow, encode(bob), dataset_of(bob[0]).StudyInstanceUID):
        kw = dict(kw)
        path = kw.pop("path", template)
        if "json" in kw and who:
            kw["json"] = {k: (accounts[who].code(1) if v == "<next>" else accounts[who].password if v == "<password>" else v)
                          for k, v in kw["json"].items()}
        before = _state(archive)
        r = http.call(method, path, who, **kw)
        assert r.status_code == status, f"{method} {template}: {r.status_code} {r.text[:300]}"
        _check_one_action(archive, before, records, f"{method} {template}")
    for (method, path), _ in NOT_RECORDED_ROUTES.items():
        if path == "/auth/refresh":
            continue  # its reuse is recorded; covered in tests/identity
        if path in ("/shares/{share_id}", "/s/{token}", "/s/logout"):
            continue  # need a link or a recipient session: tests/sharing/test_share_actions.py
        before = _state(archive)
        r = http.call(method, path, "admin" if path.startswith(("/admin", "/metrics", "/shares")) else None)
        assert r.status_code == 200, f"{method} {path}: {r.status_code}"
        _check_nothing(archive, before, f"{method} {path}")
