"""Fixtures of the HL7 v2 feed tests: registered devices with certificates (as the DIMSE tests issue them)."""

from tests.dimse.conftest import issue  # noqa: F401
