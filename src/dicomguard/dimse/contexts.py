"""Presentation contexts the archive accepts (PS3.8 7.1.1.13, PS3.4 Annexes A, B, C)."""

from __future__ import annotations

import copy
from typing import Any, Final

from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

QUERY_RETRIEVE = (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelMove,
)
ACCEPTED_TRANSFER_SYNTAXES = [ExplicitVRLittleEndian, *(ts for ts in ALL_TRANSFER_SYNTAXES if ts != ExplicitVRLittleEndian)]
"""In order of preference: of the syntaxes a peer proposes in one presentation context, the first of this list is
accepted (pynetdicom's acceptor). Explicit VR Little Endian first (pynetdicom's own order starts with Implicit VR):
it keeps every element's VR, private elements included (PS3.5 7.1.2), every modality proposes it beside Implicit VR,
and it is what most objects are stored in, so a C-GET peer proposing it receives them in their stored syntax, byte for
byte, not converted to Implicit VR (pynetdicom still encodes each object again from its parsed elements)."""

FIND_MODELS = {PatientRootQueryRetrieveInformationModelFind: "PATIENT", StudyRootQueryRetrieveInformationModelFind: "STUDY"}


def add_supported_contexts(ae) -> None:  # type: ignore[no-untyped-def]
    """Verification, every storage SOP class in every transfer syntax pynetdicom knows, Q/R Find/Get/Move.

    Storage contexts allow both roles so that C-GET can send objects back on
    the requestor's association (PS3.4 C.4.3, role selection PS3.7 D.3.3.4).
    """
    ae.add_supported_context(Verification)
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, ACCEPTED_TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
    for sop in QUERY_RETRIEVE:
        ae.add_supported_context(sop)


class AcceptorContexts(list[PresentationContext]):
    """The listener's presentation contexts, copied for each association it accepts without ``copy.deepcopy``.

    pynetdicom hands every accepted association its own copy of the server's contexts (the negotiation
    of PS3.8 9.3.3.2 writes results and roles into them) made with ``deepcopy``, which rebuilds every
    transfer syntax UID one by one: for the archive's 177 contexts, 44 ms of CPU per association, on
    the GIL, before the first message (a modality that opens one association per image paid it per
    image). Here each context is copied with a list of its own; the UIDs, immutable strings, are shared,
    as pynetdicom's own contexts share them with its constant lists. A context with fields other than
    the ones known (another pynetdicom) is deep-copied as before.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> list[PresentationContext]:
        return [_own_copy(cx, memo) for cx in self]


_CONTEXT_FIELDS: Final = frozenset(vars(PresentationContext()))
"""What a context holds: its transfer syntax list, the rest immutable (an id, a UID, a result, role flags)."""


def _own_copy(context: PresentationContext, memo: dict[int, Any]) -> PresentationContext:
    if vars(context).keys() != _CONTEXT_FIELDS or not all(
            isinstance(value, (str, int, type(None))) for name, value in vars(context).items() if name != "_transfer_syntax"):
        return copy.deepcopy(context, memo)
    own = copy.copy(context)
    own._transfer_syntax = list(context._transfer_syntax)
    return own
