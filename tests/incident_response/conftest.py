"""Fixtures of the incident-response tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def events(archive) -> list:  # type: ignore[no-untyped-def,type-arg]
    seen: list = []  # type: ignore[type-arg]
    archive.ctx.bus.subscribe(lambda s, e: seen.append(e))
    return seen


from tests.dimse.conftest import dimse, issue  # noqa: E402,F401  (the DIMSE listener and device credentials fixtures)
