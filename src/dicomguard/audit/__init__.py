"""The audit trail: DICOM PS3.15 A.5 audit messages for every core event.

Stored sealed in the transaction of the action they record and bound to the
integrity ledger (:mod:`.trail`), forwarded to syslog collectors over mutual TLS
(:mod:`.forwarder`), reviewed and exported (:mod:`.store`, :mod:`.report`,
:mod:`.fhir`), imported from other systems (:mod:`.imports`, :mod:`.listener`),
verified by ``dicomguard verify`` (:mod:`.verify`). See docs/audit.md.
"""
