"""QIDO-RS at scale: study- and instance-level searches over an index of up to 10 million instances, on PostgreSQL.

What is measured: the latency (p50 / p95 / p99, ms) of each QIDO-RS query kind below, at each archive size of
``--sizes`` (instances; default ``1000000,10000000``), and the ratio of the medians between the smallest and the
largest size. Each kind: 1 warm-up and ``--runs`` (default 50) timed runs with varied keys (random picks of existing
values); a kind that is slower than ``--max-kind-seconds`` stops after at least ``--min-runs`` runs (the count made
is reported). Every run is one request as the web layer makes it, without HTTP and TLS: a fresh
``archive.services(principal)`` (fresh policy caches), the request parameters parsed by ``qido_params.parse_query``,
``web/qido.py``'s ``answer`` with ``search_studies`` / ``search_instances`` (index query, decryption, exact
matching, one Cedar decision per candidate study; study searches read candidates a batch at a time and stop once
``offset + limit + 1`` visible matches are found, ADR 0014) inside ``QueryService.one_query`` (the ``QueryPerformed``
audit record and its ledger entry committed), and the DICOM JSON of the page, serialized.

Query kinds (principal: a radiologist of the generated department, built by ``user_principal`` as the web layer
builds it; ``--operator`` adds the local operator for two kinds, for comparison):

* ``study_patient_id``       ``/studies?PatientID=<id>&limit=100`` (1 patient: 3 visible studies)
* ``study_patient_name``     ``/studies?PatientName=<FAM>*&limit=100`` (a 3-letter family-name stem such as ``DOE*``:
  1/400 of the patients, so its matches grow with the archive)
* ``study_patient_id_birth`` as ``study_patient_id`` with ``includefield=PatientBirthDate`` (the patient-level search too)
* ``study_name_suffix``      ``/studies?PatientName=*<family less its first letter>^<given>&limit=100`` (a leading
  wildcard, narrowed by a suffix index, ADR 0017: 1/8000 of the patients)
* ``study_name_infix``       ``/studies?PatientName=*<3 letters inside a family name>*&limit=100`` (no index narrows
  it: refused whole, 413, once ``limits.max_search_candidates`` candidates would be read; the time to that answer)
* ``study_offset_deep``      ``/studies?limit=100&offset=50000`` (past the candidate budget: refused, 413)
* ``study_date_week``        ``/studies?StudyDate=<d>-<d+6>&limit=100`` (one week: ~0.19 % of the studies)
* ``study_uid``              ``/studies?StudyInstanceUID=<uid>&limit=100``
* ``study_accession``        ``/studies?AccessionNumber=<acc>&limit=100``
* ``study_all``              ``/studies?limit=100&offset=0``
* ``instances_of_study``     ``/studies/<uid>/instances`` (the 40 instances of one study, series attributes too)
* ``instances_of_series``    ``/studies/<uid>/series/<uid>/instances`` (10 instances)
* ``series_all``             ``/series?limit=100`` (series across all studies, first page)
* ``series_modality_absent`` ``/series?Modality=MR&limit=100`` (no study holds an MR series: an empty answer)
* ``series_uid``             ``/series?SeriesInstanceUID=<uid>&limit=100`` (one series, found without its study's UID)
* ``instances_all``          ``/instances?limit=100`` (instances across all studies, first page)
* ``instance_uid``           ``/instances?SOPInstanceUID=<uid>&limit=100`` (one instance, without its study's UID)
* ``cfind_study_week``       C-FIND STUDY level, ``StudyDate=<d>-<d+6>`` (as ``dimse/query.py`` answers it, less the
  association: DIMSE has no paging, so every match of the week, at most ``limits.max_find_results``)
* ``cfind_study_all``        C-FIND STUDY level with no key: more than ``limits.max_find_results`` (10,000) matches
  at 1 M instances and above, refused whole (A700) once that many + 1 are found
* ``cfind_patient_name``     C-FIND PATIENT level, ``PatientName=<FAM>*`` (1/400 of the patients)
* ``cfind_patient_all``      C-FIND PATIENT level with no key: every patient up to ``limits.max_find_results``
  (6,250 at 1 M instances), refused above it (62,500 at 10 M)

One extra, untimed run per kind and size records every SQL statement the request made (count, time, rows) and
``EXPLAIN (ANALYZE, BUFFERS)`` of each distinct SELECT on the index tables: saved in the results, the evidence of
which statement grows with the archive.

How rows are made. Shape: 1 patient : 4 studies (3 of department RADIOLOGY, 1 of CARDIOLOGY, which the
radiologist may not query) : 4 CT series per study : 10 instances per series, i.e. 40 instances per study, 160
per patient; study dates spread over 2015-2024, 400 family names, unique Patient IDs, accession numbers and UIDs.

1. A real archive home (``init_home``) on a scratch PostgreSQL database; 480 real CT objects (3 patients of that
   shape, ``tests/dicom_factory.ct_series``, headers rewritten to the shape's UIDs, dates and departments) stored
   through ``archive.operator.store.ingest``: every index table has real rows and the template instances have real
   blobs, digests and salts.
2. Copies up to each size, in batches of 2,000 patients, straight into the index tables: ``patients`` (a new data
   key per patient, wrapped under the KEK; the sealed ``phi`` re-sealed; every blind index recomputed),
   ``patient_tokens`` (the ID and name prefix and suffix indexes), ``studies`` and ``series`` (sealed ``phi`` re-sealed, the
   accession and Study Date blind indexes recomputed; department, site, labels, referring index as the template) by COPY; then
   ``instances`` by one ``INSERT ... SELECT`` per batch from the template patient's instances (new SOP Instance
   UIDs, same SOP class, transfer syntax, size, digests and blob salt). Sealed values cannot be copied verbatim:
   each is bound to its row id and its patient's key (AES-GCM associated data), so a copied ciphertext would not
   open and QIDO would leave the row out; re-sealing keeps every copied row readable, as a real one is. The copies
   have no blobs (QIDO never reads blobs; ``blob_id`` is unique in the schema, so a copy's is its SOP Instance UID).
   The ledger and the audit trail do not grow with the copies (QIDO reads neither; each measured query appends
   its own audit record and ledger entry). ``VACUUM ANALYZE`` of the index tables after each fill (an archive
   in steady state has statistics and a visibility map).
3. The database is dropped at the end (``scratch_database`` of ``bench/incident_scope.py``).

Disk: about 0.75 KB per instance with its share of parents, blind indexes and indexes (~7 GiB at 10 million);
the free space is checked before the first fill and ``pg_database_size`` printed after each. Runtime on 2 cores:
``--sizes 100000,1000000`` about 3 min; ``1000000,10000000`` about 15 min (the fill of 10 M is ~8 min).

Targets (from the brief): p99 reported per kind; no query path does work proportional to the archive size
(a flat path has a median ratio near 1x between sizes; the summary names those that are not).

Usage: ``python bench/qido_scale.py [--sizes 1000000,10000000] [--runs 50] [--min-runs 10]
[--max-kind-seconds 120] [--operator] [--seed 1] [--out FILE]``.
Results: ``bench/results/qido-scale-<date>.json`` (rewritten after each size), and a summary table printed.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import json
import os
import pstats
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DICOMGUARD_UNSAFE_TEST_PASSWORD_HASH", "1")
os.environ.setdefault("DICOMGUARD_KDF__MEMORY_KIB", "8192")  # unsealing the KEK is not what is measured
os.environ.setdefault("DICOMGUARD_KDF__TIME_COST", "1")
for _var in ("DICOMGUARD_PASSPHRASE_FILE", "DICOMGUARD_DATABASE__URL", "DICOMGUARD_HOME"):
    os.environ.pop(_var, None)

import pydicom  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from sqlalchemy import event, select, text  # noqa: E402

from bench.incident_scope import PG_ADMIN, scratch_database  # noqa: E402
from dicomguard.app.archive import Archive  # noqa: E402
from dicomguard.app.home import init_home  # noqa: E402
from dicomguard.core.access import Principal  # noqa: E402
from dicomguard.core.attributes import PatientAttributes  # noqa: E402
from dicomguard.core.keyring import PURPOSE_IDENTITY  # noqa: E402
from dicomguard.core.phi import RowSealer  # noqa: E402
from dicomguard.core.services.query import QueryService  # noqa: E402
from dicomguard.core.wildcard_tokens import wildcard_tokens  # noqa: E402
from dicomguard.crypto.blind_index import BlindField  # noqa: E402
from dicomguard.dimse.query import _find as find_matches  # noqa: E402
from dicomguard.dimse.query import _response as cfind_response  # noqa: E402
from dicomguard.errors import SearchTooBroad  # noqa: E402
from dicomguard.identity.users import create_user, user_principal  # noqa: E402
from dicomguard.index.db import read_session, write_session  # noqa: E402
from dicomguard.index.models import Patient, Series, Study  # noqa: E402
from dicomguard.web.qido import (  # noqa: E402
    INSTANCE_DEFAULT,
    SERIES_DEFAULT,
    STUDY_DEFAULT,
    _to_json,
    answer,
    search_instances,
    search_series,
    search_studies,
)
from dicomguard.web.qido_params import Level, parse_query  # noqa: E402
from tests.dicom_factory import FakePatient, ct_series, to_bytes  # noqa: E402

PASSPHRASE = "benchmark passphrase, throwaway archive"
STUDIES_PER_PATIENT, SERIES_PER_STUDY, INSTANCES_PER_SERIES = 4, 4, 10
PER_STUDY = SERIES_PER_STUDY * INSTANCES_PER_SERIES
PER_PATIENT = STUDIES_PER_PATIENT * PER_STUDY
TEMPLATE_PATIENTS = 3
HIDDEN_STUDY = 3
"""Study number (0-3) of each patient that is of another department: the radiologist may not query it."""
DEPARTMENT, OTHER_DEPARTMENT = "RADIOLOGY", "CARDIOLOGY"
UID_ROOT = "1.2.826.0.1.3680043.8.498.4711"
FIRST_DAY, DAYS = dt.date(2015, 1, 1), 3653
BATCH_PATIENTS = 2000
BYTES_PER_INSTANCE = 800
"""Estimated database bytes per instance (heap and indexes of instances and its share of the parent rows)."""
RADIOLOGIST = "qidorad"
BASE_URL = "https://archive.example/dicomweb"
INDEX_TABLES = ("patients", "patient_tokens", "studies", "series", "instances")

_CONSONANTS, _VOWELS = "BCDFGHKLMNPRSTVZ", "AEIOU"
_STEMS = ["DOE"] + [c + v + d for c in _CONSONANTS for v in _VOWELS for d in _CONSONANTS if c + v + d != "DOE"][:399]
_ENDINGS = ("", "ER", "MAN", "SON", "OWSKI", "ELLI", "INGTON", "ARD")
FAMILIES = [s if s == "DOE" else s + _ENDINGS[i % len(_ENDINGS)] for i, s in enumerate(_STEMS)]
"""400 family names, each with its own 3-letter stem: ``<stem>*`` matches one family, 1/400 of the patients."""
GIVEN = ["JOHN", "JANE", "MARIA", "AHMED", "WEI", "OLGA", "PEDRO", "AIKO", "LARS", "FATIMA", "IVAN", "CHLOE",
         "OMAR", "ELENA", "KOFI", "INGRID", "RAJ", "SOFIA", "TOMAS", "LEILA"]


# -- the shape: every value of patient p is a function of p -------------------------------------------


def patient_id(p: int) -> str:
    return f"PIDQS{p:08d}"


def patient_name(p: int) -> str:
    return f"{FAMILIES[(p * 7919) % len(FAMILIES)]}^{GIVEN[(p * 31) % len(GIVEN)]}"


def birth_date(p: int) -> str:
    return (dt.date(1930, 1, 1) + dt.timedelta(days=(p * 48271) % 29000)).strftime("%Y%m%d")


def study_uid(p: int, k: int) -> str:
    return f"{UID_ROOT}.1.{p}.{k}"


def series_uid(p: int, k: int, j: int) -> str:
    return f"{UID_ROOT}.2.{p}.{k}.{j}"


def accession(p: int, k: int) -> str:
    return f"AQS{p:08d}{k}"


def study_day(p: int, k: int) -> dt.date:
    return FIRST_DAY + dt.timedelta(days=((p * STUDIES_PER_PATIENT + k) * 2654435761) % DAYS)


def department(k: int) -> str:
    return OTHER_DEPARTMENT if k == HIDDEN_STUDY else DEPARTMENT


# -- building ------------------------------------------------------------------------------------------


def store_templates(archive: Archive) -> int:
    """The template patients, stored as real objects through the ingest pipeline; returns the object count."""
    stored = 0
    for p in range(TEMPLATE_PATIENTS):
        for k in range(STUDIES_PER_PATIENT):
            for j in range(SERIES_PER_STUDY):
                fake = FakePatient(patient_id(p), patient_name(p), birth_date(p), accession(p, k))
                for i, data in enumerate(ct_series(fake, n=INSTANCES_PER_SERIES, size=8, seed=p * 100 + k * 10 + j)):
                    ds = pydicom.dcmread(io.BytesIO(data))
                    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid(p, k), series_uid(p, k, j)
                    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{series_uid(p, k, j)}.{i + 1}"
                    ds.StudyDate = ds.SeriesDate = study_day(p, k).strftime("%Y%m%d")
                    ds.SeriesNumber = j + 1
                    ds.InstitutionalDepartmentName = department(k)
                    archive.operator.store.ingest(to_bytes(ds))
                    stored += 1
    return stored


@dataclass
class Templates:
    """Decrypted sealed documents of the template patients (the copies' documents are these, re-sealed)."""

    patient: dict[int, dict[str, Any]]
    study: dict[tuple[int, int], dict[str, Any]]
    series: dict[tuple[int, int, int], dict[str, Any]]
    study_rows: dict[tuple[int, int], dict[str, Any]]
    series_rows: dict[tuple[int, int, int], dict[str, Any]]


def read_templates(archive: Archive) -> Templates:
    t = Templates({}, {}, {}, {}, {})
    ctx = archive.ctx
    with read_session(ctx.engine) as s:
        for p in range(TEMPLATE_PATIENTS):
            ref = ctx.patients.find(patient_id(p), None)[0][0]
            sealer = RowSealer(ctx.keyring.patient_key(ref, s))
            t.patient[p] = sealer.open("patients", ref, s.scalar(select(Patient.phi).where(Patient.ref == ref)))
            for k in range(STUDIES_PER_PATIENT):
                row = s.execute(select(Study.__table__).where(Study.uid == study_uid(p, k))).one()._asdict()
                t.study[(p, k)], t.study_rows[(p, k)] = sealer.open("studies", row["uid"], row["phi"]), row
                for j in range(SERIES_PER_STUDY):
                    se = s.execute(select(Series.__table__).where(Series.uid == series_uid(p, k, j))).one()._asdict()
                    t.series[(p, k, j)], t.series_rows[(p, k, j)] = sealer.open("series", se["uid"], se["phi"]), se
    return t


COLUMNS = {
    "patients": ("ref", "kek_id", "wrapped_data_key", "identity_token", "demographics_token", "id_token", "name_token",
                 "birth_date_token", "phi", "created_at"),
    "patient_tokens": ("patient_ref", "field", "token"),
    "studies": ("uid", "patient_ref", "accession_token", "study_year", "study_date_token", "phi", "created_at", "department", "site",
                "labels", "referring_token"),
    "series": ("uid", "study_uid", "modality", "series_number", "phi", "created_at"),
    "bench_series_map": ("series_uid", "study_uid", "patient_ref", "template_series_uid"),
}

COPY_INSTANCES = """
INSERT INTO instances (sop_instance_uid, series_uid, study_uid, patient_ref, sop_class_uid, transfer_syntax, instance_number,
                       number_of_frames, rows, columns, blob_id, blob_salt, size, pixel_sha256, header_sha256, stored_at, erased)
SELECT m.series_uid || '.' || t.instance_number, m.series_uid, m.study_uid, m.patient_ref, t.sop_class_uid, t.transfer_syntax,
       t.instance_number, t.number_of_frames, t.rows, t.columns, m.series_uid || '.' || t.instance_number, t.blob_salt, t.size,
       t.pixel_sha256, t.header_sha256, now(), false
FROM bench_series_map m JOIN instances t ON t.series_uid = m.template_series_uid
"""


class Filler:
    """Grows the archive to a number of patients, in batches, with rows as the ingest pipeline writes them."""

    def __init__(self, archive: Archive, templates: Templates) -> None:
        self.archive, self.t = archive, templates
        self.patients = TEMPLATE_PATIENTS
        self._name_tokens: dict[str, tuple[bytes, list[tuple[int, bytes]]]] = {}
        with write_session(archive.ctx.engine) as s:
            s.execute(text("CREATE UNLOGGED TABLE IF NOT EXISTS bench_series_map (series_uid varchar(64), study_uid varchar(64), "
                           "patient_ref varchar(32), template_series_uid varchar(64))"))

    def grow(self, patients: int, progress: Callable[[int], None]) -> None:
        while self.patients < patients:
            upto = min(patients, self.patients + BATCH_PATIENTS)
            self._batch(range(self.patients, upto))
            self.patients = upto
            progress(upto)

    def _name(self, name: str) -> tuple[bytes, list[tuple[int, bytes]]]:
        if name not in self._name_tokens:
            ix = self.archive.ctx.indexer
            self._name_tokens[name] = (ix.token(BlindField.PATIENT_NAME, name), [(int(f), t) for f, t in wildcard_tokens(ix, "", name)])
        return self._name_tokens[name]

    def _batch(self, patients: range) -> None:
        ctx = self.archive.ctx
        ix, keyring, directory = ctx.indexer, ctx.keyring, ctx.patients
        rows: dict[str, list[tuple[Any, ...]]] = {k: [] for k in COLUMNS}
        now = dt.datetime.now(dt.UTC)
        for p in patients:
            tp = p % TEMPLATE_PATIENTS
            ref = uuid.uuid4().hex
            key, wrapped = keyring.new_patient_key(ref)
            sealer = RowSealer(key)
            phi = {**self.t.patient[tp], "id": patient_id(p), "name": patient_name(p), "birth_date": birth_date(p)}
            attrs = PatientAttributes(phi["id"], phi["issuer"], phi["name"], phi["birth_date"], phi["sex"])
            name_token, name_prefixes = self._name(phi["name"])
            rows["patients"].append((
                ref, keyring.kek_id, wrapped, directory.identity_token(attrs.patient_id, attrs.issuer), directory.demographics_token(attrs),
                ix.token(BlindField.PATIENT_ID, attrs.patient_id), name_token, ix.token(BlindField.PATIENT_BIRTH_DATE, attrs.birth_date),
                sealer.seal("patients", ref, phi), now,
            ))
            rows["patient_tokens"] += [(ref, int(f), t) for f, t in wildcard_tokens(ix, attrs.patient_id, "")]
            rows["patient_tokens"] += [(ref, f, t) for f, t in name_prefixes]  # and suffixes (ADR 0017)
            for k in range(STUDIES_PER_PATIENT):
                st_uid, day = study_uid(p, k), study_day(p, k)
                date = day.strftime("%Y%m%d")
                template = self.t.study_rows[(tp, k)]
                rows["studies"].append((
                    st_uid, ref, ix.token(BlindField.ACCESSION_NUMBER, accession(p, k)), day.year, ix.token(BlindField.STUDY_DATE, date),
                    sealer.seal("studies", st_uid, {**self.t.study[(tp, k)], "accession_number": accession(p, k), "date": date}),
                    now, department(k), template["site"], template["labels"], template["referring_token"],
                ))
                for j in range(SERIES_PER_STUDY):
                    se_uid, se_template = series_uid(p, k, j), self.t.series_rows[(tp, k, j)]
                    rows["series"].append((se_uid, st_uid, se_template["modality"], se_template["series_number"],
                                           sealer.seal("series", se_uid, {**self.t.series[(tp, k, j)], "date": date}), now))
                    rows["bench_series_map"].append((se_uid, st_uid, ref, series_uid(tp, k, j)))
        raw = ctx.engine.raw_connection()
        try:
            conn = raw.driver_connection
            with conn.cursor() as cur:
                cur.execute("TRUNCATE bench_series_map")
                for table, columns in COLUMNS.items():
                    with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                        for row in rows[table]:
                            copy.write_row(row)
                cur.execute(COPY_INSTANCES)
            conn.commit()
        finally:
            raw.close()


def vacuum_analyze(archive: Archive) -> float:
    """``VACUUM ANALYZE`` of the index tables, then a checkpoint: the fill's writes are not flushed during the timings."""
    t0 = time.perf_counter()
    with archive.ctx.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        for table in INDEX_TABLES:
            c.exec_driver_sql(f"VACUUM ANALYZE {table}")
        c.exec_driver_sql("CHECKPOINT")
    return time.perf_counter() - t0


def database_facts(archive: Archive) -> dict[str, Any]:
    with archive.ctx.engine.connect() as c:
        counts = {t: c.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar_one() for t in (*INDEX_TABLES, "audit_records", "ledger_leaves")}
        sizes = {t: c.exec_driver_sql(f"SELECT pg_total_relation_size('{t}')").scalar_one() for t in INDEX_TABLES}
        db = c.exec_driver_sql("SELECT pg_database_size(current_database())").scalar_one()
    return {"rows": counts, "table_bytes": sizes, "database_bytes": db}


# -- queries -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    name: str
    levels: frozenset[Level]
    defaults: tuple[str, ...]
    params: Callable[[random.Random, int], tuple[list[tuple[str, str]], str | None, str | None]]
    """(query parameters, study UID of the path, series UID of the path) for ``patients`` patients."""


def _visible_study(rng: random.Random, patients: int) -> tuple[int, int]:
    return rng.randrange(patients), rng.choice([k for k in range(STUDIES_PER_PATIENT) if k != HIDDEN_STUDY])


def _week(rng: random.Random, _: int) -> tuple[list[tuple[str, str]], None, None]:
    start = FIRST_DAY + dt.timedelta(days=rng.randrange(DAYS - 7))
    end = start + dt.timedelta(days=6)
    return [("StudyDate", f"{start:%Y%m%d}-{end:%Y%m%d}"), ("limit", "100")], None, None


def _by_uid(rng: random.Random, n: int) -> tuple[list[tuple[str, str]], None, None]:
    return [("StudyInstanceUID", study_uid(*_visible_study(rng, n))), ("limit", "100")], None, None


def _by_accession(rng: random.Random, n: int) -> tuple[list[tuple[str, str]], None, None]:
    return [("AccessionNumber", accession(*_visible_study(rng, n))), ("limit", "100")], None, None


def _study_instances(rng: random.Random, n: int) -> tuple[list[tuple[str, str]], str, None]:
    return [], study_uid(*_visible_study(rng, n)), None


def _series_instances(rng: random.Random, n: int) -> tuple[list[tuple[str, str]], str, str]:
    p, k = _visible_study(rng, n)
    return [], study_uid(p, k), series_uid(p, k, rng.randrange(SERIES_PER_STUDY))


def _series_by_uid(rng: random.Random, n: int) -> tuple[list[tuple[str, str]], None, None]:
    p, k = _visible_study(rng, n)
    return [("SeriesInstanceUID", series_uid(p, k, rng.randrange(SERIES_PER_STUDY))), ("limit", "100")], None, None


def _instance_by_uid(rng: random.Random, n: int) -> tuple[list[tuple[str, str]], None, None]:
    p, k = _visible_study(rng, n)
    sop = f"{series_uid(p, k, rng.randrange(SERIES_PER_STUDY))}.{rng.randrange(INSTANCES_PER_SERIES) + 1}"
    return [("SOPInstanceUID", sop), ("limit", "100")], None, None


def _name_suffix(rng: random.Random, n: int) -> tuple[list[tuple[str, str]], None, None]:
    """``*<family without its first letter>^<given name>``: a leading wildcard, narrowed by a suffix index (ADR 0017)."""
    family, given = patient_name(rng.randrange(n)).split("^")
    return [("PatientName", f"*{family[1:]}^{given}"), ("limit", "100")], None, None


def _name_infix(rng: random.Random, n: int) -> tuple[list[tuple[str, str]], None, None]:
    """``*<middle of a family name>*``: no index narrows it; refused past ``limits.max_search_candidates``."""
    family = patient_name(rng.randrange(n)).split("^")[0]
    return [("PatientName", f"*{family[1:4]}*"), ("limit", "100")], None, None


_STUDY = frozenset({Level.STUDY})
_ALL_SERIES = frozenset({Level.STUDY, Level.SERIES})
_ALL_INSTANCES = frozenset({Level.STUDY, Level.SERIES, Level.INSTANCE})
KINDS = [
    Kind("study_patient_id", _STUDY, STUDY_DEFAULT, lambda r, n: ([("PatientID", patient_id(r.randrange(n))), ("limit", "100")], None, None)),
    Kind("study_patient_name", _STUDY, STUDY_DEFAULT,
         lambda r, n: ([("PatientName", r.choice(_STEMS) + "*"), ("limit", "100")], None, None)),
    Kind("study_patient_id_birth", _STUDY, STUDY_DEFAULT,
         lambda r, n: ([("PatientID", patient_id(r.randrange(n))), ("includefield", "PatientBirthDate"), ("limit", "100")], None, None)),
    Kind("study_name_suffix", _STUDY, STUDY_DEFAULT, _name_suffix),
    Kind("study_name_infix", _STUDY, STUDY_DEFAULT, _name_infix),
    Kind("study_offset_deep", _STUDY, STUDY_DEFAULT, lambda r, n: ([("limit", "100"), ("offset", "50000")], None, None)),
    Kind("study_date_week", _STUDY, STUDY_DEFAULT, _week),
    Kind("study_uid", _STUDY, STUDY_DEFAULT, _by_uid),
    Kind("study_accession", _STUDY, STUDY_DEFAULT, _by_accession),
    Kind("study_all", _STUDY, STUDY_DEFAULT, lambda r, n: ([("limit", "100"), ("offset", "0")], None, None)),
    Kind("instances_of_study", frozenset({Level.SERIES, Level.INSTANCE}), INSTANCE_DEFAULT + SERIES_DEFAULT, _study_instances),
    Kind("instances_of_series", frozenset({Level.INSTANCE}), INSTANCE_DEFAULT, _series_instances),
    Kind("series_all", _ALL_SERIES, SERIES_DEFAULT, lambda r, n: ([("limit", "100")], None, None)),
    Kind("series_modality_absent", _ALL_SERIES, SERIES_DEFAULT, lambda r, n: ([("Modality", "MR"), ("limit", "100")], None, None)),
    Kind("series_uid", _ALL_SERIES, SERIES_DEFAULT, _series_by_uid),
    Kind("instances_all", _ALL_INSTANCES, INSTANCE_DEFAULT + SERIES_DEFAULT + STUDY_DEFAULT, lambda r, n: ([("limit", "100")], None, None)),
    Kind("instance_uid", _ALL_INSTANCES, INSTANCE_DEFAULT + SERIES_DEFAULT + STUDY_DEFAULT, _instance_by_uid),
    Kind("cfind_study_week", frozenset(), (), _week),
    Kind("cfind_study_all", frozenset(), (), lambda r, n: ([], None, None)),
    Kind("cfind_patient_name", frozenset(), (),
         lambda r, n: ([("QueryRetrieveLevel", "PATIENT"), ("PatientName", r.choice(_STEMS) + "*")], None, None)),
    Kind("cfind_patient_all", frozenset(), (), lambda r, n: ([("QueryRetrieveLevel", "PATIENT")], None, None)),
]
OPERATOR_KINDS = ("study_patient_id", "instances_of_study")


def qido(archive: Archive, principal: Principal, kind: Kind, params: list[tuple[str, str]], study: str | None,
         series: str | None) -> tuple[int, int]:
    """One QIDO-RS request as ``web/qido.py`` ``_search`` and ``_respond`` serve it (less HTTP); (page size, more?)."""
    services = archive.services(principal)
    try:
        return _qido(archive, services, kind, params, study, series)
    except SearchTooBroad:
        return 0, 1  # refused whole (QIDO-RS 413, C-FIND A700), recorded with 0 results


def _qido(archive: Archive, services: Any, kind: Kind, params: list[tuple[str, str]], study: str | None,
          series: str | None) -> tuple[int, int]:
    if not kind.levels:
        return cfind(services.query, archive.settings.limits.max_find_results, params)
    q = parse_query(params, set(kind.levels))
    level = "IMAGE" if Level.INSTANCE in kind.levels else "SERIES" if Level.SERIES in kind.levels else "STUDY"
    if kind.levels == _STUDY:
        page, more = answer(services.query, q, level, search_studies)
    elif kind.levels == _ALL_SERIES:
        page, more = answer(services.query, q, level, lambda query, qq, want: search_series(query, qq, None, want))
    else:
        page, more = answer(services.query, q, level, lambda query, qq, want: search_instances(query, qq, study, series, want))
    json.dumps([_to_json(r, q, kind.defaults, BASE_URL) for r in page])
    return len(page), int(more)


def cfind(query: QueryService, max_results: int, params: list[tuple[str, str]]) -> tuple[int, int]:
    """One C-FIND (STUDY level, or PATIENT level when the parameters say ``QueryRetrieveLevel=PATIENT``) as
    ``dimse/query.py`` ``handle_find`` answers it (less the association): the matches found, at most
    ``limits.max_find_results`` + 1, the Query record committed, each response data set built; (responses answered,
    refused?). Over the limit the request is refused whole (A700) and answers nothing."""
    level = dict(params).get("QueryRetrieveLevel", "STUDY")
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    keys = ("PatientID", "PatientName", "PatientBirthDate", "NumberOfPatientRelatedStudies") if level == "PATIENT" else (
        "StudyInstanceUID", "PatientID", "PatientName", "StudyDate", "AccessionNumber", "ModalitiesInStudy")
    for key in keys:
        setattr(identifier, key, "")
    for key, value in params:
        if key not in ("limit", "QueryRetrieveLevel"):
            setattr(identifier, key, value)
    with query.one_query(level) as one:
        matches = find_matches(query, identifier, level, max_results + 1)
        one.results = len(matches) if len(matches) <= max_results else 0
    if len(matches) > max_results:
        return 0, 1
    for record, response_keys in matches:
        cfind_response(identifier, level, record, response_keys, "DICOMGUARD")
    return len(matches), 0


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))]


def measure(archive: Archive, principal: Principal, kind: Kind, patients: int, rng: random.Random, runs: int, min_runs: int,
            max_seconds: float) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    qido(archive, principal, kind, *kind.params(rng, patients))  # warm-up
    ms: list[float] = []
    matches: list[int] = []
    started = time.perf_counter()
    for n in range(runs):
        args = kind.params(rng, patients)
        t0 = time.perf_counter()
        found, _ = qido(archive, principal, kind, *args)
        ms.append((time.perf_counter() - t0) * 1000)
        matches.append(found)
        if n + 1 >= min_runs and time.perf_counter() - started > max_seconds:
            break
    return {"runs": len(ms), "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95), "p99_ms": percentile(ms, 99),
            "mean_ms": statistics.fmean(ms), "min_ms": min(ms), "max_ms": max(ms),
            "matches_median": statistics.median(matches), "matches_max": max(matches), "truncated": len(ms) < runs,
            # 1-minute load average before and after: well above 1, something else shared the 2 cores
            "load_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


@contextmanager
def statements(archive: Archive) -> Iterator[list[dict[str, Any]]]:
    """Every SQL statement executed on the archive's engine inside the block: text, parameters, ms, rows."""
    seen: list[dict[str, Any]] = []

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        conn.info["bench_t0"] = time.perf_counter()

    def after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        seen.append({"sql": statement, "params": None if executemany else parameters,
                     "ms": (time.perf_counter() - conn.info.pop("bench_t0")) * 1000, "rows": cursor.rowcount})

    engine = archive.ctx.engine
    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)


def profile(archive: Archive, principal: Principal, kind: Kind, patients: int, rng: random.Random) -> dict[str, Any]:
    """One untimed request: its statements grouped by text, and EXPLAIN ANALYZE of each SELECT on the index tables."""
    args = kind.params(rng, patients)
    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    with statements(archive) as seen:
        profiler.enable()
        found, page = qido(archive, principal, kind, *args)
        profiler.disable()
    total_ms = (time.perf_counter() - t0) * 1000
    groups: dict[str, dict[str, Any]] = {}
    for st in seen:
        g = groups.setdefault(st["sql"], {"sql": st["sql"], "count": 0, "ms": 0.0, "rows": 0, "params": st["params"]})
        g["count"] += 1
        g["ms"] += st["ms"]
        g["rows"] += max(st["rows"], 0)
    out = sorted(groups.values(), key=lambda g: -g["ms"])
    with archive.ctx.engine.connect() as c:
        for g in out:
            sql = g["sql"].lstrip().upper()
            if not sql.startswith("SELECT") or " FOR UPDATE" in sql or not any(t in g["sql"] for t in INDEX_TABLES):
                continue
            if not isinstance(g["params"], dict | None):
                continue
            plan = c.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + g["sql"], g["params"] or {}).scalars().all()
            g["explain"] = "\n".join(plan)
        c.rollback()
    for g in out:
        g["ms"] = round(g["ms"], 3)
        g["params"] = _short(g["params"])
        g["sql"] = _short(g["sql"])
    return {"params": args[0], "study": args[1], "series": args[2], "matches": found, "page": page,  # rows answered; whether more matched
            "total_ms": total_ms,
            "statements": sum(g["count"] for g in out), "sql_ms": sum(g["ms"] for g in out), "python": _breakdown(profiler),
            "by_statement": out}


BREAKDOWN = {
    ("core/query.py", "studies"): "IndexQuery.studies (index read, decryption, matching)",
    ("core/query.py", "patients"): "IndexQuery.patients",
    ("core/query.py", "series"): "IndexQuery.series",
    ("core/query.py", "_instances"): "IndexQuery._instances",
    ("core/query.py", "_open"): "IndexQuery._open (row decryption)",
    ("core/keyring.py", "patient_key"): "Keyring.patient_key (cache miss: read and unwrap)",
    ("core/query.py", "study_access"): "IndexQuery.study_access (policy attributes)",
    ("policy/engine.py", "decide_many"): "PolicyEngine.decide_many (Cedar)",
    ("core/access_control.py", "visible_studies"): "AccessControl.visible_studies (attributes and Cedar)",
    ("core/service.py", "record_alone"): "Service.record_alone (audit record and ledger entry)",
    ("web/qido.py", "_to_json"): "qido._to_json (DICOM JSON of the page)",
}


def _breakdown(profiler: cProfile.Profile) -> dict[str, dict[str, float]]:
    """Cumulative time (ms, under the profiler: inflated, compare shares) and calls of the functions that matter."""
    out: dict[str, dict[str, float]] = {}
    for (path, _line, func), (_cc, calls, _tt, cumulative, _callers) in pstats.Stats(profiler).stats.items():  # type: ignore[attr-defined]
        label = BREAKDOWN.get((Path(path).parent.name + "/" + Path(path).name, func))
        if label is not None and "dicomguard" in path:
            hit = out.setdefault(label, {"ms": 0.0, "calls": 0})
            hit["ms"] += round(cumulative * 1000, 1)
            hit["calls"] += calls
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["ms"]))


def _short(value: Any, limit: int = 1500) -> Any:
    if isinstance(value, dict):
        if len(value) > 12:
            return {"(parameters)": len(value)}
        return {k: _short(v, 100) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + f"... ({len(value)} characters)"
    return value if isinstance(value, int | float | str | None) else repr(value)[:100]


# -- main ----------------------------------------------------------------------------------------------


def summary(results: dict[str, Any]) -> str:
    sizes = [s for s in results["sizes"] if "queries" in s]
    names = list(dict.fromkeys(k for s in sizes for k in s["queries"]))
    head = f"{'query kind':32}" + "".join(f"{'p50/p95/p99 ms @ ' + format(s['instances'], ','):>34}" for s in sizes)
    lines = [head + f"{'p50 ratio':>11}  matches"]
    for name in names:
        cells = []
        for s in sizes:
            m = s["queries"].get(name)
            cells.append(f"{m['p50_ms']:9.1f} /{m['p95_ms']:9.1f} /{m['p99_ms']:9.1f}" + ("*" if m["truncated"] else " ") if m else " " * 34)
        first, last = sizes[0]["queries"].get(name), sizes[-1]["queries"].get(name)
        ratio = f"{last['p50_ms'] / first['p50_ms']:10.1f}x" if first and last and len(sizes) > 1 else " " * 11
        matches = " -> ".join(f"{s['queries'][name]['matches_median']:g}" for s in sizes if name in s["queries"])
        lines.append(f"{name:32}" + "".join(f"{c:>34}" for c in cells) + ratio + "  " + matches)
    lines.append("(* fewer runs than asked: the kind exceeded --max-kind-seconds; matches: median rows answered, i.e. the page)")
    for s in sizes:
        lines.append(f"{s['instances']:>12,} instances: database {s['facts']['database_bytes'] / 2**30:.2f} GiB, "
                     f"fill {s['fill_s']:.0f} s (cumulative {s['fill_total_s']:.0f} s), vacuum analyze {s['vacuum_s']:.0f} s")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000", help="archive sizes in instances, ascending")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--min-runs", type=int, default=5)
    parser.add_argument("--max-kind-seconds", type=float, default=120)
    parser.add_argument("--operator", action="store_true", help="also the local operator, for " + ", ".join(OPERATOR_KINDS))
    parser.add_argument("--kinds", default="", help="comma-separated subset of: " + ", ".join(k.name for k in KINDS))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    kinds = [k for k in KINDS if not args.kinds or k.name in args.kinds.split(",")]
    out = args.out or ROOT / "bench" / "results" / f"qido-scale-{dt.date.today()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    free = shutil.disk_usage("/").free
    need = sizes[-1] * BYTES_PER_INSTANCE
    print(f"disk: {free / 2**30:.1f} GiB free; estimated database at {sizes[-1]:,} instances: {need / 2**30:.1f} GiB", flush=True)
    if need > free - 10 * 2**30:
        raise SystemExit("not enough free disk for the largest size (keeping 10 GiB spare)")
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(), "cores": os.cpu_count(), "database": "postgresql " + PG_ADMIN.split("@")[1],
        "shape": {"studies_per_patient": STUDIES_PER_PATIENT, "series_per_study": SERIES_PER_STUDY,
                  "instances_per_series": INSTANCES_PER_SERIES, "hidden_study_per_patient": 1, "families": len(FAMILIES),
                  "study_date_days": DAYS, "template_patients": TEMPLATE_PATIENTS},
        "method": "service layer: web/qido.py search functions in QueryService.one_query, QIDO paging and DICOM JSON; no HTTP/TLS",
        "runs": args.runs, "sizes": [],
    }
    work = Path(tempfile.mkdtemp(prefix="dg-qido-scale-"))
    with scratch_database("postgresql") as database:
        init_home(work / "home", PASSPHRASE, "admin", database)
        archive = Archive.open(work / "home", PASSPHRASE)
        try:
            with archive.ctx.engine.connect() as c:
                results["postgres"] = {k: c.exec_driver_sql(f"SHOW {k}").scalar_one()
                                       for k in ("server_version", "shared_buffers", "work_mem", "max_parallel_workers_per_gather")}
            with write_session(archive.ctx.engine) as s:
                create_user(s, archive.ctx.keyring.archive_key(PURPOSE_IDENTITY), RADIOLOGIST, "radiologist", department=DEPARTMENT)
            with read_session(archive.ctx.engine) as s:
                principals = {"radiologist": user_principal(s, RADIOLOGIST)}
            if args.operator:
                principals["operator"] = Principal.operator()
            t0 = time.perf_counter()
            print(f"storing {TEMPLATE_PATIENTS * PER_PATIENT} template objects through ingest ...", flush=True)
            results["template_objects"] = store_templates(archive)
            results["template_s"] = time.perf_counter() - t0
            filler = Filler(archive, read_templates(archive))
            fill_total = 0.0
            for size in sizes:
                patients = max(TEMPLATE_PATIENTS, size // PER_PATIENT)
                free = shutil.disk_usage("/").free
                print(f"== {size:,} instances ({patients:,} patients); {free / 2**30:.1f} GiB free", flush=True)
                t0 = time.perf_counter()

                def progress(done: int, started: float = t0, target: int = patients) -> None:
                    if done % (BATCH_PATIENTS * 5) == 0 or done == target:
                        rate = (done - TEMPLATE_PATIENTS) * PER_PATIENT / max(time.perf_counter() - started + fill_total, 1e-9)
                        print(f"   filled {done:,}/{target:,} patients ({done * PER_PATIENT:,} instances, ~{rate:,.0f} instances/s overall)",
                              flush=True)

                filler.grow(patients, progress)
                fill_s = time.perf_counter() - t0
                fill_total += fill_s
                vacuum_s = vacuum_analyze(archive)
                filler_done = {"instances": patients * PER_PATIENT, "patients": patients, "fill_s": fill_s, "fill_total_s": fill_total,
                               "vacuum_s": vacuum_s, "facts": database_facts(archive), "queries": {}, "profiles": {}}
                print(f"   rows {filler_done['facts']['rows']}; database {filler_done['facts']['database_bytes'] / 2**30:.2f} GiB; "
                      f"fill {fill_s:.0f} s, vacuum analyze {vacuum_s:.0f} s", flush=True)
                results["sizes"].append(filler_done)
                for who, principal in principals.items():
                    for kind in kinds:
                        if who != "radiologist" and kind.name not in OPERATOR_KINDS:
                            continue
                        label = kind.name if who == "radiologist" else f"{kind.name} (operator)"
                        m = measure(archive, principal, kind, patients, rng, args.runs, args.min_runs, args.max_kind_seconds)
                        filler_done["queries"][label] = m
                        print(f"   {label:34} n={m['runs']:3}  p50 {m['p50_ms']:9.1f}  p95 {m['p95_ms']:9.1f}  p99 {m['p99_ms']:9.1f} ms"
                              f"  matches~{m['matches_median']:g}", flush=True)
                        filler_done["profiles"][label] = profile(archive, principal, kind, patients, rng)
                        out.write_text(json.dumps(results, indent=1, default=str))
                out.write_text(json.dumps(results, indent=1, default=str))
        finally:
            archive.close()
            shutil.rmtree(work, ignore_errors=True)
    results["summary"] = summary(results)
    out.write_text(json.dumps(results, indent=1, default=str))
    print(results["summary"])
    print(f"results: {out}")


if __name__ == "__main__":
    main()
