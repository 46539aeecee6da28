"""De-identified release (PS3.15 Annex E, ``dicomguard.deid``): files, archive studies, and re-identification.

Every run is decided by the policies (``deidentify``: on the archive for files, on each
study for an export) and recorded as one ``Deidentified`` event: a PS3.15 A.5.3.4 Export
message marked de-identified (profile, options, project) and a ledger leaf binding the
SHA-256 of every source and every result (their list is written beside the output as
``deid-provenance.json``; the leaf holds its hash). An object that cannot be released
clean is refused with its reason and no file of it is written; the others are released.

Pseudonyms are keyed per project: HKDF of the archive's ``deid`` key and the project
name, so the same archive keys give the same pseudonyms on every run and machine, and
another project gives unlinkable ones (GDPR art. 4(5) pseudonymisation). Only the
archive's keys re-identify, through :meth:`DeidService.reidentify`, which is itself
decided (``reidentify``) and recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dicomguard.core.access import Action, Resource
from dicomguard.core.events import Deidentified, Reidentified
from dicomguard.core.keyring import PURPOSE_DEID
from dicomguard.core.query import IndexQuery
from dicomguard.core.service import Service
from dicomguard.crypto.aead import derive_key
from dicomguard.deid.engine import Deidentifier, DeidKeys
from dicomguard.deid.errors import DeidRefused
from dicomguard.deid.options import Option
from dicomguard.deid.pixels import clean_pixels
from dicomguard.deid.pseudonyms import Pseudonymizer
from dicomguard.errors import DicomGuardError

PROVENANCE_FILE = "deid-provenance.json"


@dataclass
class DeidRun:
    """What one run released and refused. ``refused``: (source name, reason) — the reason never quotes PHI."""

    project: str
    options: tuple[str, ...]
    written: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    pairs: list[tuple[str, str]] = field(default_factory=list)
    """(source SHA-256, result SHA-256) of every released object."""

    @property
    def ok(self) -> bool:
        return not self.refused

    def pairs_sha256(self) -> str:
        return hashlib.sha256("".join(f"{a} {b}\n" for a, b in sorted(self.pairs)).encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {"project": self.project, "options": list(self.options), "written": self.written,
                "refused": [{"source": s, "reason": r} for s, r in self.refused], "ok": self.ok}


def project_key(deid_key: bytes, project: str) -> DeidKeys:
    return DeidKeys(project, derive_key(deid_key, b"dicomguard deid project v1|" + project.encode("utf-8")))


class DeidService(Service):
    def _deidentifier(self, options: frozenset[Option], project: str) -> Deidentifier:
        keys = project_key(self.ctx.keyring.ensure_archive_key(PURPOSE_DEID), project)
        return Deidentifier(options, keys, pixel_cleaner=clean_pixels)

    def files(self, sources: Iterable[tuple[str, bytes]], out_dir: Path, options: frozenset[Option], project: str) -> DeidRun:
        """De-identify objects that need not be in the archive (``dicomguard deid``); ``sources`` are (name, Part 10 bytes)."""
        self.access.authorize(Action.DEIDENTIFY, Resource.archive())
        run = DeidRun(project, tuple(sorted(o.value for o in options)))
        patients = self._release(self._deidentifier(options, project), sources, out_dir, run)
        self._record(run, "files", (), tuple(sorted(patients)), (), out_dir)
        return run

    def export_study(self, study_uid: str, out_dir: Path, options: frozenset[Option], project: str) -> DeidRun:
        """De-identify one archived study (``export --deidentify``): read through the retrieve plan, decided as ``deidentify``."""
        from dicomguard.core.services.retrieve import RetrieveService

        plan = RetrieveService(self.ctx, self.access).plan(Action.DEIDENTIFY, study_uids=[study_uid])
        run = DeidRun(project, tuple(sorted(o.value for o in options)))
        refs = sorted({r.patient_ref for r in plan.records})

        def sources() -> Iterator[tuple[str, bytes]]:
            for rec, obj in plan.objects():  # the read itself is recorded by the plan (Instances Accessed, deidentify)
                if isinstance(obj, DicomGuardError):
                    run.refused.append((rec.sop_instance_uid, f"not released: {obj}"))
                    continue
                yield rec.sop_instance_uid, obj.data

        self._release(self._deidentifier(options, project), sources(), out_dir, run)
        self._record(run, "archive", tuple(refs), (), (study_uid,), out_dir)
        return run

    def _release(self, deid: Deidentifier, sources: Iterable[tuple[str, bytes]], out_dir: Path, run: DeidRun) -> set[str]:
        patients: set[str] = set()

        def one(item: tuple[str, bytes]) -> tuple[str, bytes, bytes | None, str | None, str]:
            name, data = item
            try:
                out, outcome = deid.deidentify_bytes(data)
            except DeidRefused as exc:
                return name, data, None, str(exc), ""
            except Exception as exc:  # noqa: BLE001 - fail closed: an object the engine cannot handle is not released
                return name, data, None, f"de-identification failed ({type(exc).__name__})", ""
            ds = outcome.dataset
            rel = f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
            patients.add(outcome.source_patient_id)
            return name, data, out, None, rel

        workers = min(8, (os.cpu_count() or 1) + 1)  # OCR runs in tesseract processes: threads keep every core busy
        with ThreadPoolExecutor(max_workers=workers) as pool:
            window: deque[Future[tuple[str, bytes, bytes | None, str | None, str]]] = deque()
            for item in sources:  # a bounded window: a large folder is never held in memory at once
                window.append(pool.submit(one, item))
                if len(window) >= 2 * workers:
                    self._write(window.popleft().result(), out_dir, run)
            while window:
                self._write(window.popleft().result(), out_dir, run)
        return patients

    @staticmethod
    def _write(done: tuple[str, bytes, bytes | None, str | None, str], out_dir: Path, run: DeidRun) -> None:
        name, data, out, reason, rel = done
        if out is None:
            run.refused.append((name, reason or "refused"))
            return
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        tmp.write_bytes(out)
        tmp.replace(target)  # only a whole, clean object ever appears under its name
        run.written.append(str(target))
        run.pairs.append((hashlib.sha256(data).hexdigest(), hashlib.sha256(out).hexdigest()))

    def _record(self, run: DeidRun, source: str, refs: tuple[str, ...], patient_ids: tuple[str, ...], studies: tuple[str, ...],
                out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        provenance = {"project": run.project, "options": list(run.options), "profile": "PS3.15 E.1 Basic Application Level "
                      "Confidentiality Profile", "pairs_sha256": run.pairs_sha256(),
                      "objects": [{"source_sha256": a, "result_sha256": b} for a, b in sorted(run.pairs)]}
        (out_dir / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=1))
        self.record_alone(Deidentified(self.principal, run.project, run.options, source, refs, patient_ids, studies,
                                       len(run.pairs), len(run.refused), run.pairs_sha256(), str(out_dir), datetime.now(UTC)))

    def reidentify(self, project: str, pseudonym_patient_id: str) -> list[str]:
        """The archive's Patient IDs whose pseudonym in ``project`` is ``pseudonym_patient_id`` (``reidentify``; recorded)."""
        self.access.authorize(Action.REIDENTIFY, Resource.archive())
        keys = project_key(self.ctx.keyring.ensure_archive_key(PURPOSE_DEID), project)
        pseudonyms = Pseudonymizer(keys.key, keys.project)
        matches = [(p.ref, p.patient_id) for p in IndexQuery(self.ctx).patients()
                   if pseudonyms.patient_id(p.patient_id) == pseudonym_patient_id.strip()]
        self.record_alone(Reidentified(self.principal, project, pseudonym_patient_id.strip()[:64],
                                       tuple(ref for ref, _ in matches), datetime.now(UTC)))
        return [pid for _, pid in matches]
