"""Presentation contexts the archive accepts (PS3.8 7.1.1.13, PS3.4 Annexes A, B, C)."""

from __future__ import annotations

from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts
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


def requested_storage_contexts(ae) -> None:  # type: ignore[no-untyped-def]
    """Contexts the archive proposes when it sends (C-MOVE sub-operations)."""
    for cx in AllStoragePresentationContexts[:120]:  # PS3.8: at most 128 proposed contexts
        ae.add_requested_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
