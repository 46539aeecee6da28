"""Fixtures of the detection tests: the published PS3.15 audit schema (alerts are Security Alerts), a real rsyslogd."""

from tests.audit.conftest import rsyslog, schema, valid  # noqa: F401
