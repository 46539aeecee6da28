"""kill -9 in the middle of a large import leaves a home that opens, verifies and keeps every acknowledged object."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from dicomguard.app.archive import Archive
from dicomguard.core.query import IndexQuery
from dicomguard.index.db import read_session
from dicomguard.index.models import IngestJournal, Instance
from tests.conftest import PASSPHRASE
from tests.dicom_factory import ALICE, BOB, ct_series, us_multiframe

pytestmark = pytest.mark.slow  # kills import subprocesses

WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from dicomguard.app.archive import Archive
    files = sorted(Path(sys.argv[2]).iterdir())
    with Archive.open(sys.argv[1]) as a:
        items = [(str(f), (lambda f=f: f.read_bytes())) for f in files]
        for outcome in a.operator.store.ingest_many(items, source="crash-test"):
            if outcome.result is not None:
                print("STORED", outcome.result.sop_instance_uid, flush=True)
    print("DONE", flush=True)
    """
)


def _inputs(folder: Path) -> None:
    folder.mkdir()
    objects = ct_series(ALICE, n=40, size=256) + [us_multiframe(BOB, frames=40, rows=240, cols=320, seed=i) for i in range(6)]
    for i, data in enumerate(objects):
        (folder / f"{i:03d}.dcm").write_bytes(data)


@pytest.mark.parametrize("kill_after_lines", [1, 9, 25])
def test_sigkill_mid_import_loses_nothing_acknowledged(home, tmp_path, monkeypatch, kill_after_lines) -> None:
    inputs = tmp_path / "in"
    _inputs(inputs)
    monkeypatch.setenv("DICOMGUARD_INGEST__BATCH_SIZE", "4")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(home), str(inputs)], stdout=subprocess.PIPE, text=True, env=env
    )
    acknowledged: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("STORED"):
            acknowledged.append(line.split()[1])
        if len(acknowledged) >= kill_after_lines or line.startswith("DONE"):
            break
    time.sleep(0.05 * (kill_after_lines % 4))  # land somewhere inside the next batch
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert acknowledged, "the writer acknowledged nothing before it was killed"
    assert proc.returncode == -signal.SIGKILL, "the writer finished before it could be killed"

    with Archive.open(home, PASSPHRASE) as a:  # opens, recovers interrupted ingests
        with read_session(a.ctx.engine) as s:
            indexed = list(s.scalars(select(Instance)))
            journal = sum(1 for b in s.scalars(select(IngestJournal.blob_id)) if a.ctx.store.exists(b))
        uids = {r.sop_instance_uid for r in indexed}
        assert set(acknowledged) <= uids, "an acknowledged object was lost"
        for row in indexed:  # every indexed object decrypts and verifies
            assert a.operator.retrieve.instance(row.sop_instance_uid).data
        assert journal == 0
        assert sorted(a.ctx.store.iter_ids()) == sorted(r.blob_id for r in indexed), "half-stored blob left behind"
        assert not list(a.ctx.store.root.rglob(".tmp-*"))
        # the interrupted import can simply be run again
        outcomes = list(a.operator.store.ingest_many([(str(f), (lambda f=f: f.read_bytes())) for f in sorted(inputs.iterdir())]))
        assert all(o.result for o in outcomes)
        assert len(IndexQuery(a.ctx).instances()) == 46
