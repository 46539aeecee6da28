"""dcmtk, an independent reader, accepts the medium: dcmdump parses the DICOMDIR, dcmftest every file, dcmmkdir links it.

dcmtk is the Debian package ``dcmtk`` (/usr/bin). Without it these tests are
skipped, except under CI (``CI`` set), where that is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dicomguard.media import DICOMDIR
from tests.dicom_factory import ALICE, BOB, ct_series, us_multiframe
from tests.share_media.objects import extract, key_object, sr_document, stream_all


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} not installed (Debian package dcmtk)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def medium(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    objects = ct_series(ALICE, n=3) + [us_multiframe(ALICE), sr_document(BOB), key_object(BOB)]
    archive, media = stream_all(objects)
    return extract(archive, tmp_path_factory.mktemp("medium")), dict(media.file_ids)


def run(*command: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd)


def test_dcmdump_reads_the_dicomdir(medium: tuple[Path, dict[str, str]]) -> None:
    root, file_ids = medium
    result = run(tool("dcmdump"), "-E", str(root / DICOMDIR))
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "=MediaStorageDirectoryStorage" in result.stdout
    referenced = re.findall(r"\(0004,1500\) CS \[([^\]]*)\]", result.stdout)
    assert sorted(r.replace("\\", "/") for r in referenced) == sorted(file_ids.values())
    record_types = re.findall(r"\(0004,1430\) CS \[([^\]]*)\]", result.stdout)
    assert record_types.count("PATIENT") == 2 and record_types.count("SR DOCUMENT") == 1


def test_dcmftest_accepts_every_file(medium: tuple[Path, dict[str, str]]) -> None:
    root, file_ids = medium
    paths = [str(root / DICOMDIR), *(str(root / name) for name in file_ids.values())]
    result = run(tool("dcmftest"), *paths)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("yes: ") == len(paths) and "no: " not in result.stdout


def test_dcmmkdir_follows_the_offsets_to_every_instance(medium: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    """``dcmmkdir +A`` loads the DICOMDIR (resolving every record offset) and finds each file's record already there."""
    root, file_ids = medium
    work = tmp_path / "copy"
    shutil.copytree(root, work)
    result = run(tool("dcmmkdir"), "+A", "-v", "+r", "DICOM", cwd=work)  # rewrites the copy's DICOMDIR
    assert result.returncode == 0, result.stdout + result.stderr
    log = result.stdout + result.stderr
    assert not re.search(r"^E: ", log, re.MULTILINE) and "Cannot resolve offset" not in log, log
    assert log.count("directory record for this SOP instance already exists") == len(file_ids), log
