"""The architecture holds: import contracts (import-linter) and no authorization decided in code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "dicomguard"
ROLES = ("admin", "security_officer", "radiologist", "cardiologist", "technologist", "sonographer", "referring_physician",
         "researcher")
_ROLE = "|".join(ROLES)
# A role name compared or tested for membership (`"admin" in roles`, `role == "admin"`, `in ("admin", ...)`), or roles
# intersected with a set of privileged ones (`roles & {...}`, `... & METRICS_ROLES`, `in ADMIN_ROLES`).
ROLE_CHECK = re.compile(
    rf"""["'](?:{_ROLE})["']\s*(?:not\s+)?in\b|(?:==|!=)\s*["'](?:{_ROLE})["']|\bin\s*[\(\[{{]\s*["'](?:{_ROLE})["']"""
    r"|\.roles\s*[&|]|&\s*\w*ROLES\b|\bin\s+\w*_ROLES\b"
)


def test_import_contracts_hold() -> None:
    """adapters -> app -> services -> core -> (crypto, storage, index); ledger and audit independent (pyproject.toml)."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), str(ROOT / "pyproject.toml")], cwd=ROOT / "src", capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.slow
def test_a_broken_contract_is_caught(tmp_path: Path) -> None:
    """The check is not vacuous: a core module that imports the audit trail breaks the first contract."""
    tree = tmp_path / "src"
    (tree / "dicomguard").mkdir(parents=True)
    for pkg in ("core", "audit", "app", "ledger", "policy", "identity", "pki", "cli", "web", "dimse", "gateway", "crypto", "storage",
                "index", "deid", "detect", "media", "transfer", "incident"):
        (tree / "dicomguard" / pkg).mkdir()
        (tree / "dicomguard" / pkg / "__init__.py").write_text("")
    for module in ("__init__", "config", "errors"):
        (tree / "dicomguard" / f"{module}.py").write_text("")
    (tree / "dicomguard" / "core" / "leaky.py").write_text("from dicomguard.audit import trail\n")
    (tree / "dicomguard" / "audit" / "trail.py").write_text("")
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), str(ROOT / "pyproject.toml")], cwd=tree, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "core imports no adapter" in result.stdout and "BROKEN" in result.stdout


def test_no_role_is_checked_in_code() -> None:
    """Who may do what is the policies' decision (policy/defaults/*.cedar); code names roles only to list them."""
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if ROLE_CHECK.search(line.split("#", 1)[0]):
                offenders.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert offenders == []


def test_the_role_check_pattern_finds_what_it_should() -> None:
    for line in ('if "admin" in actor.roles:', 'return user.role == "security_officer"', 'if role in ("admin", "operator"):',
                 "if not (user.roles or {user.role}) & METRICS_ROLES:", "allowed = 'radiologist' not in roles"):
        assert ROLE_CHECK.search(line), line
    for line in ('ROLES = ("radiologist", "cardiologist")', '"admin": timedelta(minutes=10),', "principal.roles.contains(\"admin\")"):
        assert not ROLE_CHECK.search(line), line
