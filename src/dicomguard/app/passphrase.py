"""Where the passphrase that unseals the KEK comes from.

Order: ``DICOMGUARD_PASSPHRASE``, then the file named by
``DICOMGUARD_PASSPHRASE_FILE`` (unattended services: a file readable only by the
service account, e.g. a systemd credential), then an interactive prompt in the
CLI. The passphrase is never written anywhere by dicomguard.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from dicomguard.errors import ConfigurationError

PASSPHRASE_ENV = "DICOMGUARD_PASSPHRASE"
PASSPHRASE_FILE_ENV = "DICOMGUARD_PASSPHRASE_FILE"


def passphrase_from_environment() -> str | None:
    value = os.environ.get(PASSPHRASE_ENV)
    if value:
        return value
    file_name = os.environ.get(PASSPHRASE_FILE_ENV)
    if file_name:
        path = Path(file_name)
        try:
            mode = path.stat().st_mode
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"cannot read {PASSPHRASE_FILE_ENV}: {exc.strerror}") from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigurationError(f"{path} is readable by others; chmod 600 it")
        text = text.rstrip("\r\n")
        if not text:
            raise ConfigurationError(f"{path} is empty")
        return text
    return None
