"""Fixtures of the incident-response tests."""

from __future__ import annotations

from tests.dimse.conftest import dimse, issue  # noqa: F401  (the DIMSE listener and device credentials fixtures)
