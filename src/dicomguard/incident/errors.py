"""The one error of the incident-report package: the facts given cannot make a report.

Raised for facts that are inconsistent (a naive datetime, a negative count, an
interval that ends before it starts) and for an unknown report kind or letter
language. Messages name the offending field, never a value that could identify
a patient.
"""

from __future__ import annotations

from dicomguard.errors import DicomGuardError


class IncidentReportError(DicomGuardError):
    """The incident facts or the request cannot produce a notification (the message holds no PHI)."""
