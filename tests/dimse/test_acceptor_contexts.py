"""Each accepted association negotiates on its own copy of the listener's presentation contexts, made cheaply."""

from __future__ import annotations

import copy

from pynetdicom import AE
from pynetdicom.presentation import PresentationContext

from dicomguard.dimse.contexts import AcceptorContexts, add_supported_contexts
from tests.dicom_factory import ALICE, ct_series, write_files
from tests.dimse.conftest import dcmtk


def _snapshot(contexts: list[PresentationContext]) -> list[dict[str, object]]:
    return [vars(c) | {"_transfer_syntax": list(c.transfer_syntax)} for c in contexts]


def _templates() -> AcceptorContexts:
    ae = AE()
    add_supported_contexts(ae)
    return AcceptorContexts(ae.supported_contexts)


def test_a_copy_equals_a_deep_copy_and_owns_what_negotiation_changes() -> None:
    templates = _templates()
    assert len(templates) > 150
    before = _snapshot(templates)
    fast = copy.deepcopy(templates)
    slow = copy.deepcopy(list(templates))
    assert type(fast) is list and [vars(c) for c in fast] == [vars(c) for c in slow]
    for own, template in zip(fast, templates, strict=True):
        assert own is not template and own._transfer_syntax is not template._transfer_syntax
        own.context_id, own.result, own.scp_role = 1, 0, False
        own._transfer_syntax.clear()
    assert _snapshot(templates) == before


def test_a_context_of_another_shape_is_deep_copied() -> None:
    templates = _templates()[:2]
    templates[0].extra = ["mutable"]  # type: ignore[attr-defined] - a field this code does not know
    templates[1]._as_scu = ["not", "a", "flag"]  # type: ignore[assignment] - a known field holding a mutable value
    first, second = copy.deepcopy(templates)
    assert first.extra == ["mutable"] and first.extra is not templates[0].extra  # type: ignore[attr-defined]
    assert second._as_scu == ["not", "a", "flag"] and second._as_scu is not templates[1]._as_scu


def test_accepted_associations_leave_the_listeners_contexts_untouched(archive, dimse, issue, tmp_path) -> None:  # type: ignore[no-untyped-def]
    templates = dimse._server.contexts
    assert isinstance(templates, AcceptorContexts)
    before = _snapshot(templates)
    creds = issue("CONTEXTS")
    for k, syntax in enumerate(("-xi", "-xe")):  # Implicit, then Explicit VR Little Endian proposed: two negotiations
        files = write_files(tmp_path / f"in{k}", ct_series(ALICE, n=2, size=64))
        proc = dcmtk("storescu", creds, dimse.port, syntax, files=files)
        assert proc.returncode == 0, proc.stderr
    assert _snapshot(templates) == before
    assert all(isinstance(c, PresentationContext) and c.result is None and c.context_id is None for c in templates)
