"""One bad audit message is rejected with its reason and every other one is stored; DTDs are refused in every encoding.

Two inputs broke the import before: an ``EventDateTime`` that passes the schema but
overflows when converted to UTC (``9999-12-31T23:59:59-14:00``) raised outside the
handler and lost the whole file; and a UTF-16 document slipped past a byte search
for ``<!DOCTYPE``, so an internal entity was expanded into UserID.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dicomguard.audit.message import MessageError, parse_tree
from dicomguard.cli.main import app
from tests.audit.conftest import entries
from tests.audit.test_import import foreign

runner = CliRunner()


def _with_time(xml: bytes, when: str) -> bytes:
    start = xml.index(b'EventDateTime="') + len(b'EventDateTime="')
    end = xml.index(b'"', start)
    return xml[:start] + when.encode() + xml[end:]


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"])
def test_an_overflowing_time_fails_alone_and_the_other_lines_are_stored(archive, tmp_path: Path, when: str) -> None:  # type: ignore[no-untyped-def]
    lines = tmp_path / "collector.log"
    lines.write_bytes(foreign(1) + b"\n" + _with_time(foreign(2), when) + b"\n" + foreign(3, user="dr.remote") + b"\n")
    r = runner.invoke(app, ["audit", "import", str(lines), "--json"], catch_exceptions=False)
    result = json.loads(r.stdout)
    assert (result["stored"], result["rejected"]) == (2, 1), result
    (rejection,) = result["rejections"]
    assert rejection["message"] == "collector.log:2" and rejection["reason"]
    assert sorted(e.user for e in entries(archive)) == ["dr.remote", "tech@otherpacs"]


def _body(n: int) -> str:
    """A foreign message without its XML declaration (a DTD and a new declaration go in front)."""
    xml = foreign(n).decode()
    return xml[xml.index("?>") + 2:] if xml.startswith("<?xml") else xml


def _utf16_with_entity() -> bytes:
    doc = ('<?xml version="1.0" encoding="UTF-16"?>\n<!DOCTYPE AuditMessage [<!ENTITY who "dr.forged">]>\n'
           + _body(4).replace('UserID="tech@otherpacs"', 'UserID="&who;"'))
    return doc.encode("utf-16")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_a_dtd_is_refused_after_decoding_in_any_encoding(encoding: str) -> None:
    body = ('<?xml version="1.0"?>\n<!DOCTYPE AuditMessage [<!ENTITY who "dr.forged">]>\n'
            + _body(5).replace('UserID="tech@otherpacs"', 'UserID="&who;"'))
    data = body.replace('<?xml version="1.0"?>', f'<?xml version="1.0" encoding="{encoding.upper()}"?>').encode(encoding)
    with pytest.raises(MessageError, match="DTD"):
        parse_tree(data)


def test_a_utf16_message_with_an_entity_is_rejected_by_import_and_nothing_is_expanded(archive, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "one.xml").write_bytes(_utf16_with_entity())
    r = runner.invoke(app, ["audit", "import", str(tmp_path / "one.xml"), "--json"], catch_exceptions=False)
    result = json.loads(r.stdout)
    assert result["stored"] == 0 and result["rejected"] == 1 and "DTD" in result["rejections"][0]["reason"]
    assert not [e for e in entries(archive) if e.user == "dr.forged"]
