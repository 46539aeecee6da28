"""Session and login-throttling parameters: immutable, bounded at construction (like tuf ``ngclient/config.py``).

Defaults (NIST SP 800-63B 7.2, AAL2): access tokens live 5 minutes; a session signs off after 15
minutes without a request (per role: the shortest timeout of the user's roles
applies) and ends 12 hours after login whatever the activity. After 3 failed
logins of an account each further attempt must wait (1 s, 2 s, 4 s ...: HTTP 429
with Retry-After); after 5 the account is locked for 15 minutes, and a source
address after 20 failures across accounts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType

from dicomguard.config import SessionSettings

IDLE_TIMEOUT_BY_ROLE: Mapping[str, timedelta] = MappingProxyType(
    {
        # Roles with no image access but powerful rights sign off sooner.
        "admin": timedelta(minutes=10),
        "security_officer": timedelta(minutes=10),
    }
)


@dataclass(frozen=True)
class SessionPolicy:
    access_ttl: timedelta = timedelta(minutes=5)
    """Lifetime of an access token; the client refreshes it with the refresh token."""
    idle_timeout: timedelta = timedelta(minutes=15)
    """Automatic sign-off after this long without a request (roles not in ``idle_by_role``)."""
    idle_by_role: Mapping[str, timedelta] = field(default_factory=lambda: IDLE_TIMEOUT_BY_ROLE)
    absolute_lifetime: timedelta = timedelta(hours=12)
    """A session ends this long after login, active or not."""
    touch_interval: timedelta = timedelta(seconds=5)
    """Activity is written at most this often per session (bounds the per-request write cost)."""

    def __post_init__(self) -> None:
        if not timedelta(seconds=1) <= self.access_ttl <= timedelta(hours=1):
            raise ValueError("access_ttl must be between 1 second and 1 hour")
        if not timedelta(seconds=1) <= self.idle_timeout <= timedelta(hours=12):
            raise ValueError("idle_timeout must be between 1 second and 12 hours")
        if not self.idle_timeout <= self.absolute_lifetime <= timedelta(days=1):
            raise ValueError("absolute_lifetime must be at least the idle timeout and at most 1 day")
        if any(not timedelta(seconds=1) <= v <= self.absolute_lifetime for v in self.idle_by_role.values()):
            raise ValueError("per-role idle timeouts must be between 1 second and the absolute lifetime")

    def idle_for(self, roles: frozenset[str] | set[str] | tuple[str, ...]) -> timedelta:
        """The strictest idle timeout of the given roles."""
        return min((self.idle_by_role.get(r, self.idle_timeout) for r in roles), default=self.idle_timeout)


@dataclass(frozen=True)
class LoginPolicy:
    delay_after: int = 3
    lock_after: int = 5
    address_lock_after: int = 20
    lock_duration: timedelta = timedelta(minutes=15)
    delay_base: timedelta = timedelta(seconds=1)
    failure_window: timedelta = timedelta(minutes=15)
    """Failures older than this (since the last one) are forgotten."""

    def __post_init__(self) -> None:
        if not 1 <= self.delay_after <= self.lock_after <= 20 or self.address_lock_after < self.lock_after:
            raise ValueError("need 1 <= delay_after <= lock_after <= 20 <= ... and address_lock_after >= lock_after")

    def delay(self, failures: int) -> timedelta:
        return self.delay_base * (2 ** (failures - self.delay_after)) if failures >= self.delay_after else timedelta(0)


def session_policy_from(settings: SessionSettings) -> SessionPolicy:
    """The session policy configured in ``[sessions]`` (bounds are checked here: bad values stop the start)."""
    return SessionPolicy(
        access_ttl=timedelta(seconds=settings.access_ttl_s),
        idle_timeout=timedelta(minutes=settings.idle_timeout_min),
        idle_by_role=MappingProxyType({role: timedelta(minutes=m) for role, m in settings.idle_by_role.items()}),
        absolute_lifetime=timedelta(hours=settings.absolute_lifetime_h),
    )


DEFAULT_SESSION_POLICY = SessionPolicy()
DEFAULT_LOGIN_POLICY = LoginPolicy()
