"""Fixtures of the detection tests: the published PS3.15 audit schema (alerts are Security Alerts)."""

from tests.audit.conftest import schema, valid  # noqa: F401
