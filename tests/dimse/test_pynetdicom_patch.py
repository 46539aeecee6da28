"""Changes to pynetdicom's internals are made once, and never on a pynetdicom they were not written against."""

from __future__ import annotations

import logging

import pynetdicom
import pytest

from dicomguard.dimse.pynetdicom_patch import ProcessPatch


def test_a_patch_applies_once_and_only_where_it_fits(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    applied: list[int] = []
    monkeypatch.setattr(pynetdicom, "__version__", "3.0.4")
    unfit = ProcessPatch("keeps its own way")
    with caplog.at_level(logging.WARNING):
        assert not unfit.install(lambda: False, lambda: applied.append(1))
    assert applied == [] and "keeps its own way" in caplog.text

    patch = ProcessPatch("keeps its own way")
    assert patch.install(lambda: True, lambda: applied.append(2))
    assert patch.install(lambda: True, lambda: applied.append(3))  # installed before: nothing applied again
    assert applied == [2]

    monkeypatch.setattr(pynetdicom, "__version__", "3.1.0")
    other = ProcessPatch("keeps its own way")
    assert not other.install(lambda: True, lambda: applied.append(4))  # another series: its internals may differ
    assert applied == [2]
