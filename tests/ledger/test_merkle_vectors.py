"""RFC 9162 verifiers against the transparency-dev/merkle vectors and the RFC 6962 reference tree."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from dicomguard.ledger.merkle import (
    EMPTY_ROOT,
    MemoryTree,
    ProofError,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)

# Outside the repository on purpose (Apache-2.0 data we do not vendor); absent in a fresh clone.
VECTORS = Path(__file__).resolve().parents[3] / "shared" / "reference" / "merkle-vectors" / "testdata"
VECTOR_FILES = sorted(VECTORS.glob("*/**/*.json")) if VECTORS.is_dir() else []


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def _run_inclusion(case: dict[str, Any]) -> None:
    verify_inclusion(
        _b64(case["leafHash"]),
        case["leafIdx"],
        case["treeSize"],
        [_b64(p) for p in case["proof"] or []],
        _b64(case["root"]),
    )


def _run_consistency(case: dict[str, Any]) -> None:
    verify_consistency(
        case["size1"],
        case["size2"],
        _b64(case["root1"]),
        _b64(case["root2"]),
        [_b64(p) for p in case["proof"] or []],
    )


def test_vector_folder_is_complete() -> None:
    if not VECTORS.is_dir():
        pytest.skip(f"merkle vectors not found at {VECTORS} (a fresh clone has no ../shared)")
    kinds = {p.relative_to(VECTORS).parts[0] for p in VECTOR_FILES}
    assert kinds == {"inclusion", "consistency"}
    # Each kind has a happy path per tree in 0..4; a glob that matched nothing would pass silently.
    assert len(VECTOR_FILES) >= 150


@pytest.mark.parametrize("path", VECTOR_FILES or [None], ids=lambda p: str(p.relative_to(VECTORS)) if p else "absent")
def test_vector(path: Path | None) -> None:
    if path is None:
        pytest.skip(f"merkle vectors not found at {VECTORS} (a fresh clone has no ../shared)")
    case = json.loads(path.read_text())
    run = _run_inclusion if path.relative_to(VECTORS).parts[0] == "inclusion" else _run_consistency
    if case["wantErr"]:
        with pytest.raises(ProofError):
            run(case)
    else:
        run(case)


# The RFC 6962 reference tree used by transparency-dev/merkle (testonly/constants.go).
REFERENCE_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
]
REFERENCE_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def naive_mth(entries: list[bytes]) -> bytes:
    """MTH straight from the RFC 9162 2.1.1 definition, written without the module's helpers."""
    if not entries:
        return hashlib.sha256(b"").digest()
    if len(entries) == 1:
        return hashlib.sha256(b"\x00" + entries[0]).digest()
    k = 1
    while k * 2 < len(entries):
        k *= 2
    return hashlib.sha256(b"\x01" + naive_mth(entries[:k]) + naive_mth(entries[k:])).digest()


def test_hash_definitions() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()


@pytest.mark.parametrize("size", range(1, 9))
def test_reference_tree_roots(size: int) -> None:
    tree = MemoryTree()
    for entry in REFERENCE_LEAVES[:size]:
        tree.append(entry)
    expected = bytes.fromhex(REFERENCE_ROOTS[size - 1])
    assert naive_mth(REFERENCE_LEAVES[:size]) == expected
    assert tree.root() == expected
    for index in range(size):
        verify_inclusion(leaf_hash(REFERENCE_LEAVES[index]), index, size, tree.inclusion_proof(index), expected)
    for size1 in range(1, size + 1):
        proof = tree.consistency_proof(size1, size)
        verify_consistency(size1, size, bytes.fromhex(REFERENCE_ROOTS[size1 - 1]), expected, proof)


def test_empty_tree_root() -> None:
    assert MemoryTree().root() == EMPTY_ROOT == naive_mth([])


def test_million_leaf_proofs_are_short() -> None:
    size = 1_000_000
    tree = MemoryTree()
    tree.extend_leaf_hashes(leaf_hash(i.to_bytes(4, "big")) for i in range(size))
    root = tree.root()
    for index in (0, 1, 524_287, 524_288, 999_998, size - 1):
        proof = tree.inclusion_proof(index)
        assert len(proof) <= 20
        verify_inclusion(leaf_hash(index.to_bytes(4, "big")), index, size, proof, root)
    for size1 in (1, 3, 524_288, 777_777, size - 1):
        proof = tree.consistency_proof(size1)
        assert len(proof) <= 21  # one hash per level plus the old root's own subtree
        verify_consistency(size1, size, tree.root(size1), root, proof)
