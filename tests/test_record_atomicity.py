"""An action and its record commit together: a process killed between the change and its commit leaves neither.

Each CLI command runs in a child process with one more ``before_commit``
listener, installed after the recorder's: it sends SIGKILL to its own process
at the first commit that carries audit records, i.e. when the change, its audit
record and its ledger leaf are all written but not committed. Afterwards the
archive must hold none of them, and the command must not have printed anything
it read (a query answers only after its record committed).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import func, select

from dicomguard.core.query import IndexQuery
from dicomguard.index.db import read_session, write_session
from dicomguard.index.models import AuditRecord, Device, GatewayAllow, LedgerLeaf, Study, User
from dicomguard.pki.devices import DeviceRegistry
from dicomguard.pki.store import load_tls_material
from tests.dicom_factory import ALICE, ct_series, dataset_of

KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from sqlalchemy import event
    from sqlalchemy.orm import Session
    import dicomguard.index.db  # the recorder's before_commit hooks are installed first
    from dicomguard.cli.main import app

    @event.listens_for(Session, "before_commit")
    def _die_before_commit(session):
        if session.info.get("dicomguard.audit.wrote"):  # change, records and leaf written, nothing committed
            os.kill(os.getpid(), signal.SIGKILL)

    sys.argv = ["dicomguard", *sys.argv[1:]]
    app()
    """
)


def _counts(archive) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    with read_session(archive.ctx.engine) as s:
        return s.scalar(select(func.count()).select_from(AuditRecord)), s.scalar(select(func.count()).select_from(LedgerLeaf))


@pytest.fixture
def prepared(archive, tmp_path: Path):  # type: ignore[no-untyped-def]
    data = ct_series(ALICE, n=1)[0]
    archive.operator.store.ingest(data)
    with write_session(archive.ctx.engine) as s:
        material = load_tls_material(archive.home, archive.settings, archive.ctx.keyring)
        DeviceRegistry.add(s, "CT9", "ct nine", authority=material.authority, ca_pem=material.client_ca_pem)
    (tmp_path / "new.dcm").write_bytes(ct_series(ALICE, n=1, seed=3)[0])
    return dataset_of(data).StudyInstanceUID


def _unchanged(archive, what: str, study: str) -> bool:  # type: ignore[no-untyped-def]
    with read_session(archive.ctx.engine) as s:
        if what == "user add":
            return s.get(User, "dr.kill") is None
        if what == "device revoke":
            return s.get(Device, "CT9").revoked_at is None
        if what == "gateway allow":
            return s.scalar(select(func.count()).select_from(GatewayAllow)) == 0
        if what == "study department":
            return s.get(Study, study).department != "KILLED"
    if what == "import":
        return len(IndexQuery(archive.ctx).instances()) == 1
    return True  # a read changes nothing: only its record could have been left


COMMANDS = {
    "user add": ["user", "add", "dr.kill", "--role", "radiologist"],
    "device revoke": ["device", "revoke", "--ae", "CT9"],
    "gateway allow": ["gateway", "allow", "--ae", "KILL", "--ip", "10.6.6.6"],
    "study department": ["study", "department", "{study}", "KILLED"],
    "import": ["import", "{tmp}/new.dcm"],
    "ls": ["ls", "patients", "--json"],
    "export": ["export", "{tmp}/out", "--study", "{study}"],
}


@pytest.mark.slow
@pytest.mark.parametrize("command", list(COMMANDS))
def test_killed_between_change_and_commit_leaves_neither(archive, prepared: str, tmp_path: Path, command: str) -> None:  # type: ignore[no-untyped-def]
    before = _counts(archive)
    argv = [a.format(study=prepared, tmp=tmp_path) for a in COMMANDS[command]]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", KILLER, *argv], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert _counts(archive) == before, "a record survived without its action, or the reverse"
    assert _unchanged(archive, command, prepared)
    assert ALICE.patient_id not in proc.stdout  # nothing read was shown before its record committed
    assert not list((tmp_path / "out").rglob("*.dcm")) if (tmp_path / "out").exists() else True
    # and the same command, not killed, does what it says and is recorded
    done = subprocess.run([sys.executable, "-m", "dicomguard", *argv], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert _counts(archive)[0] > before[0]
