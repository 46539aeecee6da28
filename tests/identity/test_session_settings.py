"""Session timeouts are configuration ([sessions]): per-role idle sign-off, bounded at start."""

from __future__ import annotations

from datetime import timedelta

import pytest

from dicomguard.config import SessionSettings, Settings
from dicomguard.identity.session_policy import session_policy_from


def test_configured_timeouts_reach_the_session_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DICOMGUARD_SESSIONS__IDLE_TIMEOUT_MIN", "5")
    monkeypatch.setenv("DICOMGUARD_SESSIONS__IDLE_BY_ROLE", '{"radiologist": 30, "admin": 2}')
    policy = session_policy_from(Settings().sessions)
    assert policy.idle_for({"technologist"}) == timedelta(minutes=5)
    assert policy.idle_for({"radiologist"}) == timedelta(minutes=30)
    assert policy.idle_for({"radiologist", "admin"}) == timedelta(minutes=2)  # the strictest role wins


def test_defaults_match_the_issue() -> None:
    policy = session_policy_from(SessionSettings())
    assert policy.idle_for({"radiologist"}) == timedelta(minutes=15)
    assert policy.idle_for({"admin"}) == timedelta(minutes=10)
    assert policy.absolute_lifetime == timedelta(hours=12)


@pytest.mark.parametrize(
    "values",
    [{"idle_timeout_min": 60 * 13, "absolute_lifetime_h": 12}, {"idle_by_role": {"admin": 60 * 20}}],
    ids=["idle-longer-than-lifetime", "role-idle-longer-than-lifetime"],
)
def test_inconsistent_timeouts_stop_the_start(values: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError):
        session_policy_from(SessionSettings(**values))
