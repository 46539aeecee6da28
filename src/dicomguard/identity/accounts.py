"""Account administration: ``dicomguard user ...``, ``dicomguard token ...`` and ``/admin/users`` call :class:`AccountService`.

Who may administer which account is the policies' decision, never this code's
(by default: the ``admin`` role and the local operator; nobody administers
their own account, ``guards.cedar``). Each method decides on the target
account as it is (name, roles, department) *before* looking further, so a
principal without the right learns nothing, not even whether the account
exists; then it changes the account and records a Security Configuration alert
(PS3.15 A.5.3.11, 110129) in the same transaction. One-time secrets (password,
TOTP secret, recovery codes, tokens) are returned once and never recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sqlalchemy.orm import Session

from dicomguard.core.access import Action, Resource
from dicomguard.core.events import SecurityConfigurationChanged
from dicomguard.core.keyring import PURPOSE_IDENTITY
from dicomguard.core.service import Service
from dicomguard.crypto.blind_index import BlindField
from dicomguard.errors import NotFoundError
from dicomguard.identity import tokens, users
from dicomguard.index.db import read_session
from dicomguard.index.models import User

T = TypeVar("T")


@dataclass(frozen=True)
class NewAccount:
    """A created account: its one-time secrets and what the policies will see of it."""

    secrets: users.NewUserSecrets
    department: str
    attributes: dict[str, object]


class AccountService(Service):
    """Attribute arguments left as ``None`` keep their value; ``""`` or an empty list clears it."""

    # -- deciding ----------------------------------------------------------------------------

    def _target(self, name: str) -> Resource:
        """The account as the policies see it (an unknown name: no roles, no department)."""
        with read_session(self.ctx.engine) as s:
            user = s.get(User, name)
            roles = users.user_roles(s, name) if user is not None else ()
            department = (user.department or "") if user is not None else ""
        return Resource.account(name, roles, department)

    def _authorize(self, action: Action, name: str) -> None:
        self.access.authorize(action, self._target(name))

    def _recorded(self, s: Session, name: str, change: str) -> None:
        self.record(s, SecurityConfigurationChanged(self.principal, f"user:{name}", change, datetime.now(UTC)))

    def _referring_token(self, referring_name: str) -> str:
        """The blind index of a Referring Physician's Name (the name itself is never stored)."""
        if not referring_name.strip(" ^=\x00"):
            return ""
        return self.ctx.indexer.token(BlindField.REFERRING_PHYSICIAN, referring_name).hex()

    def _attributes(self, site: str | None, modalities: Sequence[str] | None, referring_name: str | None,
                    clearances: Sequence[str] | None) -> dict[str, object]:
        """The attribute changes asked for (keys left out stay as they are), validated."""
        out: dict[str, object] = {}
        if site is not None:
            out["site"] = site
        if modalities is not None:
            out["modalities"] = list(modalities)
        if clearances is not None:
            out["clearances"] = list(clearances)
        if referring_name is not None:
            out["referring_token"] = self._referring_token(referring_name)
        users.check_attributes({k: v for k, v in out.items() if v})
        return out

    # -- accounts ----------------------------------------------------------------------------

    def create(
        self, name: str, role: str, *, department: str | None = None, site: str | None = None,
        modalities: Sequence[str] | None = None, referring_name: str | None = None, clearances: Sequence[str] | None = None,
    ) -> NewAccount:
        """Create an account (``account-create``); returns its one-time password and TOTP secret."""
        self.access.authorize(Action.ACCOUNT_CREATE, Resource.account(name, (role,), users.check_department(department) or ""))
        attributes = users.check_attributes(self._attributes(site, modalities, referring_name, clearances))
        with self.change() as s:
            created = users.create_user(s, self.ctx.keyring.archive_key(PURPOSE_IDENTITY), name, role, department=department,
                                        attributes=attributes)
            self._recorded(s, name, f"account created with role {role}")
        return NewAccount(created, users.check_department(department) or "", attributes)

    def set_attributes(
        self, name: str, *, department: str | None = None, site: str | None = None, modalities: Sequence[str] | None = None,
        referring_name: str | None = None, clearances: Sequence[str] | None = None,
    ) -> dict[str, object]:
        """Change an account's policy attributes (``account-change``); returns them, with the department."""
        changes = self._attributes(site, modalities, referring_name, clearances)
        if department is None and not changes:
            raise ValueError("nothing to change: give at least one attribute")
        self._authorize(Action.ACCOUNT_CHANGE, name)
        kwargs: dict[str, object] = dict(changes)
        if department is not None:
            kwargs["department"] = department
        with self.change() as s:
            result = users.set_attributes(s, name, **kwargs)
            self._recorded(s, name, "policy attributes changed: " + ", ".join(sorted(kwargs)))
        return result

    def list(self) -> list[users.UserInfo]:
        """Every account, its roles, state and policy attributes (``account-read``; no secret)."""
        self.access.authorize(Action.ACCOUNT_READ, Resource.account("*"))
        with read_session(self.ctx.engine) as s:
            return users.list_users(s)

    def disable(self, name: str) -> None:
        """Disable an account: its sessions and tokens stop working at once."""
        self._change(name, "account disabled", lambda s: users.set_disabled(s, name, True))

    def enable(self, name: str) -> None:
        self._change(name, "account enabled", lambda s: users.set_disabled(s, name, False))

    def unlock(self, name: str) -> None:
        """Clear the failed-login counter and lockout of an account."""
        self._change(name, "account unlocked", lambda s: users.unlock(s, name))

    def grant_role(self, name: str, role: str) -> bool:
        """Grant an additional role; False if the account already held it (nothing is recorded then)."""
        return self._change(name, f"role {role} granted", lambda s: users.grant_role(s, name, role, self.principal.label()),
                            record_if=bool)

    def revoke_role(self, name: str, role: str) -> bool:
        """Revoke a granted role (the primary role stays); False if it was not granted."""
        return self._change(name, f"role {role} revoked", lambda s: users.revoke_role(s, name, role), record_if=bool)

    def reset_mfa(self, name: str) -> tuple[str, str]:
        """A new TOTP secret (shown once); the old one stops working and the account's sessions end."""
        identity_key = self.ctx.keyring.archive_key(PURPOSE_IDENTITY)
        return self._change(name, "TOTP secret replaced", lambda s: users.reset_mfa(s, identity_key, name))

    def new_recovery_codes(self, name: str) -> list[str]:
        """Replace the account's recovery codes with 10 new single-use codes (shown once, stored hashed)."""
        return self._change(name, "recovery codes replaced", lambda s: users.new_recovery_codes(s, name))

    # -- API tokens --------------------------------------------------------------------------

    def create_token(self, name: str, ttl: timedelta, scopes: Iterable[str] | None = None) -> str:
        """Issue an API token for the account (shown once, stored as SHA-256 only)."""
        scoped = tokens.check_scopes(scopes)
        ttl_text = f"{int(ttl.total_seconds())} s"
        return self._change(name, f"API token issued (lifetime {ttl_text}" + (f", limited to {', '.join(scoped)})" if scoped else ")"),
                            lambda s: tokens.create_token(s, name, ttl, scoped))

    def revoke_token(self, token: str) -> bool:
        """Revoke one token; False if it was unknown or already revoked."""
        with read_session(self.ctx.engine) as s:
            owner = tokens.token_owner(s, token)
        self._authorize(Action.ACCOUNT_CHANGE, owner or "*")
        if owner is None:
            return False
        with self.change() as s:
            done = tokens.revoke_token(s, token)
            if done:
                self._recorded(s, owner, "API token revoked")
        return done

    def revoke_tokens(self, name: str) -> int:
        """Revoke every live token of an account (a lost laptop); returns how many."""
        return self._change(name, "every API token revoked", lambda s: tokens.revoke_user_tokens(s, name), record_if=bool)

    # -- the shape of every change -------------------------------------------------------------

    def _change(self, name: str, change: str, act: Callable[[Session], T], record_if: Callable[[T], bool] | None = None) -> T:
        """Decide ``account-change`` on the account, then act and record in one transaction.

        ``record_if``: record only when it returns true for the result (a no-op changes nothing).
        """
        self._authorize(Action.ACCOUNT_CHANGE, name)
        with self.change() as s:
            if s.get(User, name) is None:
                raise NotFoundError(f"no user {name!r}")
            result = act(s)
            if record_if is None or record_if(result):
                self._recorded(s, name, change)
        return result
