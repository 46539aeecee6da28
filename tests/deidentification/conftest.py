"""Fixtures of the de-identification tests: the published PS3.15 audit schema (for the release records)."""

from tests.audit.conftest import schema, valid  # noqa: F401
