"""What every core service needs, wired once by :class:`dicomguard.core.archive.Archive`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from dicomguard.config import Settings
from dicomguard.core.access import Authorizer
from dicomguard.core.events import EventBus
from dicomguard.core.keyring import Keyring
from dicomguard.core.patients import PatientDirectory
from dicomguard.crypto.blind_index import BlindIndexer
from dicomguard.storage.base import BlobStore


@dataclass
class ArchiveContext:
    home: Path
    settings: Settings
    engine: Engine
    store: BlobStore
    keyring: Keyring
    indexer: BlindIndexer
    patients: PatientDirectory
    bus: EventBus
    authorizer: Authorizer
