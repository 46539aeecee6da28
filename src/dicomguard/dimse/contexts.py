"""Presentation contexts the archive accepts (PS3.8 7.1.1.13, PS3.4 Annexes A, B, C)."""

from __future__ import annotations

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
FIND_MODELS = {PatientRootQueryRetrieveInformationModelFind: "PATIENT", StudyRootQueryRetrieveInformationModelFind: "STUDY"}


def add_supported_contexts(ae) -> None:  # type: ignore[no-untyped-def]
    """Verification, every storage SOP class in every transfer syntax pynetdicom knows, Q/R Find/Get/Move.

    Storage contexts allow both roles so that C-GET can send objects back on
    the requestor's association (PS3.4 C.4.3, role selection PS3.7 D.3.3.4).
    """
    ae.add_supported_context(Verification)
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
    for sop in QUERY_RETRIEVE:
        ae.add_supported_context(sop)


def requested_storage_contexts(ae) -> None:  # type: ignore[no-untyped-def]
    """Contexts the archive proposes when it sends (C-MOVE sub-operations)."""
    for cx in AllStoragePresentationContexts[:120]:  # PS3.8: at most 128 proposed contexts
        ae.add_requested_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
