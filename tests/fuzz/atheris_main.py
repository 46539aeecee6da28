"""Long coverage-guided runs of the fuzz targets with atheris (libFuzzer), outside the test suite.

    pip install -e ".[fuzz]"
    FUZZ_SECONDS=600 python -m tests.fuzz.atheris_main dicom_structure [libFuzzer options ...]

The target is the same contract check the suite runs under hypothesis
(:mod:`tests.fuzz.targets`), so a finding here is a failing input there. The
committed corpus ``tests/fuzz/corpus/<target>/`` seeds the run and is only
read; inputs libFuzzer finds interesting go to ``FUZZ_WORKDIR/<target>/corpus``
and crashes to ``FUZZ_WORKDIR/<target>/`` (default: a folder under the
system's temporary directory). Replay a crash with the same command and the
crash file as the only argument; keep it by copying it into the corpus as
``regression-<what>``.

Only dicomguard's own modules are instrumented for coverage (pydicom, lxml and
the standard library are not), so libFuzzer's feedback is about our branches.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"


def main(argv: list[str]) -> None:
    import atheris

    if len(argv) < 2 or argv[1].startswith("-"):
        sys.exit(f"usage: python -m tests.fuzz.atheris_main TARGET [libFuzzer options]; TARGET is one of {sorted(_names())}")
    name, options = argv[1], argv[2:]
    with atheris.instrument_imports(include=["dicomguard"]):
        from tests.fuzz.targets import TARGETS
    if name not in TARGETS:
        sys.exit(f"unknown target {name!r}; one of {sorted(TARGETS)}")
    work = Path(os.environ.get("FUZZ_WORKDIR", Path(tempfile.gettempdir()) / "dicomguard-fuzz")) / name
    (work / "corpus").mkdir(parents=True, exist_ok=True)
    replay = any(not o.startswith("-") for o in options)  # a crash file given: run it alone
    defaults = [] if replay else [
        f"-max_total_time={int(os.environ.get('FUZZ_SECONDS', '60'))}",
        "-max_len=65536", "-timeout=5", "-rss_limit_mb=2048", f"-artifact_prefix={work}/",
        str(work / "corpus"), str(CORPUS / name),
    ]
    atheris.Setup([argv[0], *defaults, *options], TARGETS[name])
    atheris.Fuzz()


def _names() -> list[str]:
    return [p.name for p in CORPUS.iterdir() if p.is_dir()]


if __name__ == "__main__":
    main(sys.argv)
