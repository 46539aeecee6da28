"""Where the passphrase that unseals the KEK comes from.

Order: ``DICOMGUARD_PASSPHRASE``, then the file named by
``DICOMGUARD_PASSPHRASE_FILE`` (unattended services: a file readable only by the
service account, e.g. a systemd credential), then an interactive prompt in the
CLI. The passphrase is never written anywhere by dicomguard.
"""

from __future__ import annotations

import os
from pathlib import Path

from dicomguard.errors import ConfigurationError
from dicomguard.storage.filesystem import read_private_file

PASSPHRASE_ENV = "DICOMGUARD_PASSPHRASE"
PASSPHRASE_FILE_ENV = "DICOMGUARD_PASSPHRASE_FILE"


def passphrase_from_environment() -> str | None:
    value = os.environ.get(PASSPHRASE_ENV)
    if value:
        return value
    file_name = os.environ.get(PASSPHRASE_FILE_ENV)
    if file_name:
        path = Path(file_name)
        text = read_private_file(path, PASSPHRASE_FILE_ENV).rstrip("\r\n")
        if not text:
            raise ConfigurationError(f"{path} is empty")
        return text
    return None
