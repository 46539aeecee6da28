"""Key rotation (``dicomguard keys rotate``): a new KEK, every key re-wrapped under it, no blob re-encrypted."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from dicomguard.app.home import KEYS_DIR, kdf_params, recovery_public_key, sealed_kek_path, write_recovery_key
from dicomguard.core.access import Action, Resource
from dicomguard.core.events import KeysRotated, SecurityConfigurationChanged
from dicomguard.core.keyring import StaleKek
from dicomguard.core.service import Service
from dicomguard.crypto.kek import Kek, check_passphrase_strength
from dicomguard.index.db import checkpoint_and_shrink
from dicomguard.storage.filesystem import write_private_file


@dataclass(frozen=True)
class Rotation:
    old_kek_id: str
    new_kek_id: str
    rewrapped: int


class KeyService(Service):
    def rotate(self, passphrase: str, new_passphrase: str | None = None) -> Rotation:
        """Issue a new KEK and re-wrap every key under it (``keys-rotate``; NIST SP 800-57 Pt 1 5.3 cryptoperiods).

        Order matters for crash safety: the new sealed file is written first, the
        re-wrap commits in one transaction with its ``KeysRotated`` record, and only
        then is the old sealed file removed. The caller must know the current
        passphrase, not only hold an open archive.
        """
        self.access.authorize(Action.KEYS_ROTATE, Resource.archive())
        new_passphrase = new_passphrase or passphrase
        check_passphrase_strength(new_passphrase)
        home, keyring = self.ctx.home, self.ctx.keyring
        current = sealed_kek_path(home, keyring.kek_id)
        if not current.exists():
            raise StaleKek()  # another process rotated: this one's KEK is no longer the archive's
        old_kek = Kek.unseal(current.read_bytes(), passphrase)
        new_kek = Kek.generate()
        write_private_file(sealed_kek_path(home, new_kek.kek_id), new_kek.seal_with_passphrase(new_passphrase, kdf_params(self.ctx.settings)))
        with self.change() as s:
            count = keyring.rotate(s, new_kek)
            self.record(s, KeysRotated(old_kek.kek_id, new_kek.kek_id, count, datetime.now(UTC), self.principal))
        keyring.switch_to(new_kek)
        remove_stale_sealed_keks(home, new_kek.kek_id)
        checkpoint_and_shrink(self.ctx.engine)
        return Rotation(old_kek.kek_id, new_kek.kek_id, count)


    def new_recovery_key(self, passphrase: str, replace: bool = False) -> str:
        """Create the recovery key (``keys recovery-key``; ADR 0007): its public half goes into the home, the printable
        private half is returned once. Replacing it makes vaults written from now on open with the new one only.
        """
        self.access.authorize(Action.KEYS_ROTATE, Resource.archive())
        home = self.ctx.home
        Kek.unseal(sealed_kek_path(home, self.ctx.keyring.kek_id).read_bytes(), passphrase)  # the holder of the passphrase only
        if recovery_public_key(home) is not None and not replace:
            raise ValueError("this home has a recovery key; pass --replace to issue a new one")
        printed = write_recovery_key(home)
        self.record_alone(SecurityConfigurationChanged(self.principal, "archive", "recovery key issued", datetime.now(UTC)))
        return printed


def remove_stale_sealed_keks(home: Path, current: str) -> None:
    """Delete sealed KEKs other than the current one (left by a finished or interrupted rotation)."""
    for path in (home / KEYS_DIR).glob("kek-*.sealed"):
        if path.name != f"kek-{current}.sealed":
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
