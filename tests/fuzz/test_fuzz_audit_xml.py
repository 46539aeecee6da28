"""Fuzz target: audit messages from other systems (audit/message.py parse_tree, audit/schema.py, audit/imports.py).

Contract: ``check_message`` (parse without DTD, entities or network; A.5.1
validation; the model) returns an :class:`AuditMessage` built only from the
input's own characters, or raises :class:`MessageError`; whatever it accepts,
the archive's canonical XML of it is accepted again and reads the same.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz._harness import CORPUS, budget, mutants, seed_bytes, seed_params, timed
from tests.fuzz.targets import audit_xml

NAME = "audit_xml"
SEEDS = seed_bytes(NAME)

_names = st.sampled_from(["AuditMessage", "EventIdentification", "EventID", "ActiveParticipant", "AuditSourceIdentification",
                          "ParticipantObjectIdentification", "ParticipantObjectIDTypeCode", "ParticipantObjectName",
                          "ParticipantObjectQuery", "ParticipantObjectDetail", "ParticipantObjectDescription", "SOPClass",
                          "Instance", "RoleIDCode", "MediaIdentifier", "MediaType", "x:y", "Encrypted"])
_attrs = st.sampled_from(["EventDateTime", "EventOutcomeIndicator", "EventActionCode", "UserID", "UserIsRequestor", "csd-code",
                          "codeSystemName", "originalText", "AuditSourceID", "ParticipantObjectID", "ParticipantObjectTypeCode",
                          "NumberOfInstances", "UID", "type", "value", "NetworkAccessPointTypeCode", "xmlns", "xmlns:x", "x:y"])
_values = st.sampled_from(["2026-01-01T00:00:00Z", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "24:00:00", "0", "4",
                           " 12 ", "true", "1", "C", "AAAA", "AA=", "+-5", "9" * 30, "&amp;&#0;", "&#x10FFFF;", "&e;", "",
                           "2024-02-29T24:00:00Z", "\u0663\u0660\u0662\u0666-01-01T00:00:00Z"]) | st.text(max_size=8)


_attributes = st.dictionaries(_attrs, _values.map(lambda v: v.replace('"', "&quot;").replace("<", "&lt;")), max_size=4).map(
    lambda d: "".join(f' {a}="{v}"' for a, v in d.items()))
_texts = st.sampled_from(["", "", "AAAA", " ", "&lt;", "<!-- c -->", "<?pi x?>", "<![CDATA[x]]>"])


def _element(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(lambda name, attrs, text, kids: f"<{name}{attrs}>{text}{''.join(kids)}</{name}>",
                     _names, _attributes, _texts, st.lists(children, max_size=4))


# Grammar-shaped XML: the schema's element and attribute names in random arrangements, with hostile values.
trees = st.recursive(_element(st.just("")), _element, max_leaves=12)


@pytest.mark.parametrize("path", seed_params(NAME))
def test_seed_corpus(path: Path) -> None:
    timed(audit_xml, path.read_bytes(), NAME)


@budget(0.5)
@given(st.binary(max_size=256))
def test_arbitrary_bytes(data: bytes) -> None:
    timed(audit_xml, data, NAME)


@budget(1.5)
@given(mutants(SEEDS))
def test_mutated_seeds(data: bytes) -> None:
    timed(audit_xml, data, NAME)


@budget(1.0)
@given(trees, st.sampled_from(["utf-8", "utf-16", "latin-1"]), st.booleans())
def test_grammar_shaped_documents(xml: str, encoding: str, declare: bool) -> None:
    head = f'<?xml version="1.0" encoding="{encoding}"?>' if declare else ""
    try:
        data = (head + xml).encode(encoding)
    except UnicodeEncodeError:
        return
    timed(audit_xml, data, NAME)


def test_a_payload_starting_with_an_exclamation_mark_is_not_echoed_as_the_reason() -> None:
    from dicomguard.audit.imports import check_message
    from dicomguard.audit.message import MessageError

    payload = (CORPUS / NAME / "regression-bang-prefix-echoed.txt").read_bytes()  # what a device's frame may carry
    with pytest.raises(MessageError) as refused:
        check_message(payload)
    assert "forged" not in str(refused.value) and "\n" not in str(refused.value)
