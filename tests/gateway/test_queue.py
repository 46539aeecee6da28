"""The store-and-forward queue: durable, FIFO, encrypted at rest, tamper-evident, one owner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dicomguard.crypto.aead import new_key
from dicomguard.gateway.config import GatewayError
from dicomguard.gateway.queue import (
    CorruptItem,
    DurableQueue,
    Incoming,
    QueueFull,
    QueueLock,
    item_name,
    queue_in_use,
    requeue_dead,
    scan,
)
from tests.dicom_factory import ALICE, ct_series, us_multiframe

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"


def incoming(uid: str = "1.2.3.4") -> Incoming:
    return Incoming(CT, uid, EXPLICIT, "LEGACY_CT", "192.0.2.7")


@pytest.fixture
def key() -> bytes:
    return new_key()


def test_round_trip_fifo_and_metadata(tmp_path: Path, key: bytes) -> None:
    q = DurableQueue(tmp_path, key, segment_size=4096)
    objects = ct_series(ALICE, n=3) + [us_multiframe(ALICE)]  # several segments each
    for i, data in enumerate(objects):
        q.put_bytes(data, incoming(f"1.2.3.{i}"))
    assert q.head(10) == [1, 2, 3, 4]
    for seq, data in zip(q.head(10), objects):
        meta = q.meta(seq)
        assert (meta.seq, meta.sop_instance_uid, meta.calling_ae, meta.size) == (seq, f"1.2.3.{seq - 1}", "LEGACY_CT", len(data))
        with q.plaintext(seq) as path:
            assert str(path).startswith("/proc/self/fd/")  # memory only
            assert path.read_bytes() == data
    q.remove(1)
    assert q.head(10) == [2, 3, 4] and len(q) == 3


def test_put_file_streams_and_files_are_private(tmp_path: Path, key: bytes) -> None:
    src = tmp_path / "in.dcm"
    src.write_bytes(us_multiframe(ALICE, frames=20))
    q = DurableQueue(tmp_path / "q", key, segment_size=8192)
    q.put_file(src, incoming())
    item = tmp_path / "q" / "items" / item_name(1)
    assert item.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "q").stat().st_mode & 0o777 == 0o700
    with q.plaintext(1) as path:
        assert path.read_bytes() == src.read_bytes()


def test_no_plaintext_phi_at_rest(tmp_path: Path, key: bytes) -> None:
    q = DurableQueue(tmp_path, key)
    q.put_bytes(ct_series(ALICE, n=1)[0], incoming())
    raw = (tmp_path / "items" / item_name(1)).read_bytes()
    for secret in [*ALICE.secrets(), "LEGACY_CT", "192.0.2.7", "1.2.3.4"]:
        assert secret.encode() not in raw


def test_survives_restart_and_discards_unacknowledged_temporaries(tmp_path: Path, key: bytes) -> None:
    q = DurableQueue(tmp_path, key)
    data = ct_series(ALICE, n=2)
    q.put_bytes(data[0], incoming("1.1"))
    q.put_bytes(data[1], incoming("1.2"))
    q.remove(1)
    (tmp_path / "items" / ".tmp-7").write_bytes(b"half written, never acknowledged")
    again = DurableQueue(tmp_path, key)
    assert again.head(10) == [2]
    assert not (tmp_path / "items" / ".tmp-7").exists()
    assert again.meta(2).sop_instance_uid == "1.2"
    assert again.put_bytes(data[0], incoming("1.3")).seq == 3  # sequence continues


@pytest.mark.parametrize("attack", ["flip-byte", "truncate", "swap-names", "other-key"])
def test_tampered_items_fail_authentication(tmp_path: Path, key: bytes, attack: str) -> None:
    q = DurableQueue(tmp_path, key, segment_size=4096)
    for i, data in enumerate(ct_series(ALICE, n=2, size=96)):
        q.put_bytes(data, incoming(f"1.{i}"))
    a, b = tmp_path / "items" / item_name(1), tmp_path / "items" / item_name(2)
    if attack == "flip-byte":
        raw = bytearray(a.read_bytes())
        raw[len(raw) // 2] ^= 1
        a.write_bytes(bytes(raw))
    elif attack == "truncate":
        a.write_bytes(a.read_bytes()[: -4096 - 16])
    elif attack == "swap-names":
        tmp = a.with_suffix(".x")
        a.rename(tmp)
        b.rename(a)
        tmp.rename(b)
    q = DurableQueue(tmp_path, new_key() if attack == "other-key" else key, segment_size=4096)
    with pytest.raises(CorruptItem):
        q.meta(1) if attack in ("swap-names", "other-key") else None
        with q.plaintext(1):
            pass


def test_queue_limit_refuses_instead_of_filling_the_disk(tmp_path: Path, key: bytes) -> None:
    q = DurableQueue(tmp_path, key, max_bytes=1024 * 1024)
    small = ct_series(ALICE, n=1, size=256)[0]  # ~130 KB
    for _ in range(7):
        q.put_bytes(small, incoming())
    with pytest.raises(QueueFull):
        q.put_bytes(small, incoming())
    assert [p.name for p in (tmp_path / "items").iterdir() if p.name.startswith(".tmp")] == []


def test_dead_letters_are_kept_counted_and_can_be_requeued(tmp_path: Path, key: bytes) -> None:
    q = DurableQueue(tmp_path, key)
    q.put_bytes(ct_series(ALICE, n=1)[0], incoming())
    q.dead_letter(1, "upstream refused the object with status 0xA900", 0xA900, 3)
    assert q.head() == [] and scan(tmp_path).dead_letters == 1
    note = (tmp_path / "dead" / "00000000000000000001.json").read_text()
    assert "0xA900" in note and ALICE.patient_id not in note
    assert DurableQueue(tmp_path, key).put_bytes(b"x" * 200, incoming()).seq == 2  # no reuse of a dead seq
    with QueueLock(tmp_path):
        assert requeue_dead(tmp_path) == 1
    assert DurableQueue(tmp_path, key).head(10) == [1, 2]


def test_one_gateway_per_queue(tmp_path: Path) -> None:
    assert not queue_in_use(tmp_path)
    with QueueLock(tmp_path):
        assert queue_in_use(tmp_path)
        with pytest.raises(GatewayError, match="another gateway"):
            QueueLock(tmp_path).acquire()
    assert not queue_in_use(tmp_path)


def test_scan_needs_no_key(tmp_path: Path, key: bytes) -> None:
    q = DurableQueue(tmp_path, key)
    q.put_bytes(b"y" * 1000, incoming())
    s = scan(tmp_path)
    assert s.length == 1 and s.bytes == os.path.getsize(tmp_path / "items" / item_name(1)) and s.oldest_mtime is not None
