"""No plaintext PHI at rest: the home (blobs and database files) and a pg_dump hold no identifier."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sqlalchemy.engine import make_url

from dicomguard.core.query import IndexQuery
from tests.dicom_factory import ALICE, BOB, CAROL, ct_series, phi_needles, us_multiframe


def _raw_bytes_of_home(home: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in home.rglob("*") if p.is_file()}


def _find_leaks(blobs: dict[str, bytes]) -> list[tuple[str, bytes]]:
    return [(where, n) for where, data in blobs.items() for n in phi_needles() if n in data]


def _populate(archive) -> None:
    objects = ct_series(ALICE, n=3) + ct_series(BOB, n=2, seed=5) + [us_multiframe(CAROL, frames=3)]
    for data in objects:
        archive.operator.store.ingest(data)
    # Queries and listings touch caches and the WAL too.
    assert len(IndexQuery(archive.ctx).patients()) == 3
    assert IndexQuery(archive.ctx).studies()


def test_needles_are_really_in_the_input() -> None:
    """Guard against a vacuous test: the identifiers are present in what we import."""
    data = ct_series(ALICE, n=1)[0] + us_multiframe(CAROL)
    for s in ALICE.secrets() + [CAROL.patient_id, CAROL.name]:
        assert s.encode() in data


def test_home_files_hold_no_identifier(archive, home, db_url) -> None:
    _populate(archive)
    files = _raw_bytes_of_home(home)
    assert any(p.name.endswith(".db") for p in files) or db_url, "SQLite index file expected in the home"
    assert len([p for p in files if "blobs" in p.parts]) == 6
    leaks = _find_leaks({str(p): d for p, d in files.items()})
    assert leaks == []


def test_pg_dump_holds_no_identifier(archive, db_url) -> None:
    if not db_url:
        return  # this check is about PostgreSQL; the SQLite file is covered above
    _populate(archive)
    url = make_url(db_url)
    dump = subprocess.run(
        ["pg_dump", "-h", url.host or "127.0.0.1", "-p", str(url.port or 5432), "-U", url.username or "postgres", url.database],
        check=True, capture_output=True,
    ).stdout
    assert b"CREATE TABLE public.patients" in dump and b"COPY public.instances" in dump  # it dumped our data
    assert _find_leaks({"pg_dump": dump}) == []
