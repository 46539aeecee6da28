"""Property tests: stored-tree proofs verify, match the RFC definition, and break on any tampering."""

from __future__ import annotations

import hashlib
from functools import lru_cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dicomguard.ledger.merkle import (
    EMPTY_ROOT,
    MemoryTree,
    ProofError,
    TreeAppender,
    consistency_proof,
    frontier_nodes,
    inclusion_proof,
    nodes_needed_for_consistency,
    nodes_needed_for_inclusion,
    root,
    root_from_inclusion_proof,
    subtree_hash,
    verify_consistency,
    verify_inclusion,
)

MAX = 300


def entry(i: int) -> bytes:
    return b"entry-%d" % i


@lru_cache(maxsize=1)
def big_tree() -> MemoryTree:
    """One tree of MAX leaves; any prefix size is a tree of that size."""
    tree = MemoryTree()
    for i in range(MAX):
        tree.append(entry(i))
    return tree


def naive_mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 2.1.1 MTH by the definition (hashlib only)."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + naive_mth(leaves[:k]) + naive_mth(leaves[k:])).digest()


def naive_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 9162 2.1.3.1 PATH by the definition."""
    if len(leaves) == 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if m < k:
        return naive_path(m, leaves[:k]) + [naive_mth(leaves[k:])]
    return naive_path(m - k, leaves[k:]) + [naive_mth(leaves[:k])]


def naive_subproof(m: int, leaves: list[bytes], whole: bool) -> list[bytes]:
    """RFC 9162 2.1.4.1 SUBPROOF by the definition."""
    n = len(leaves)
    if m == n:
        return [] if whole else [naive_mth(leaves)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return naive_subproof(m, leaves[:k], whole) + [naive_mth(leaves[k:])]
    return naive_subproof(m - k, leaves[k:], False) + [naive_mth(leaves[:k])]


LEAF_HASHES = [hashlib.sha256(b"\x00" + entry(i)).digest() for i in range(MAX)]

sizes = st.integers(min_value=1, max_value=MAX)


@st.composite
def size_and_index(draw: st.DrawFn) -> tuple[int, int]:
    n = draw(sizes)
    return n, draw(st.integers(0, n - 1))


@st.composite
def two_sizes(draw: st.DrawFn) -> tuple[int, int]:
    n = draw(sizes)
    return draw(st.integers(1, n)), n


def flip(value: bytes, bit: int) -> bytes:
    b = bytearray(value)
    b[bit // 8 % len(b)] ^= 1 << (bit % 8)
    return bytes(b)


@given(sizes)
def test_root_matches_definition(n: int) -> None:
    tree = big_tree()
    assert tree.root(n) == naive_mth(LEAF_HASHES[:n])
    assert root(n, tree.node) == tree.root(n)


def test_root_of_empty_tree() -> None:
    assert big_tree().root(0) == EMPTY_ROOT == root(0, big_tree().node)


@given(size_and_index())
def test_inclusion_proof_is_rfc_path_and_verifies(case: tuple[int, int]) -> None:
    n, i = case
    tree = big_tree()
    proof = tree.inclusion_proof(i, n)
    assert proof == naive_path(i, LEAF_HASHES[:n])
    verify_inclusion(LEAF_HASHES[i], i, n, proof, tree.root(n))
    assert root_from_inclusion_proof(LEAF_HASHES[i], i, n, proof) == tree.root(n)


@given(two_sizes())
def test_consistency_proof_is_rfc_subproof_and_verifies(case: tuple[int, int]) -> None:
    m, n = case
    tree = big_tree()
    proof = tree.consistency_proof(m, n)
    assert proof == naive_subproof(m, LEAF_HASHES[:n], True)
    verify_consistency(m, n, tree.root(m), tree.root(n), proof)


@given(size_and_index(), st.data())
def test_inclusion_tampering_fails(case: tuple[int, int], data: st.DataObject) -> None:
    n, i = case
    tree = big_tree()
    proof, r, leaf = tree.inclusion_proof(i, n), tree.root(n), LEAF_HASHES[i]
    bit = data.draw(st.integers(0, 255))
    with pytest.raises(ProofError):
        verify_inclusion(flip(leaf, bit), i, n, proof, r)
    with pytest.raises(ProofError):
        verify_inclusion(leaf, i, n, proof, flip(r, bit))
    if proof:
        k = data.draw(st.integers(0, len(proof) - 1))
        bad = proof[:k] + [flip(proof[k], bit)] + proof[k + 1 :]
        with pytest.raises(ProofError):
            verify_inclusion(leaf, i, n, bad, r)
        with pytest.raises(ProofError):
            verify_inclusion(leaf, i, n, proof[:-1], r)
    with pytest.raises(ProofError):
        verify_inclusion(leaf, i, n, proof + [r], r)
    other = data.draw(st.integers(0, MAX).filter(lambda j: j != i))
    with pytest.raises(ProofError):
        verify_inclusion(leaf, other, n, proof, r)
    # A wrong size is caught when it changes the proof's shape. A size with the same shape
    # (e.g. index 0 of 3 and of 4 leaves) recomputes the same root: the verifier cannot see it,
    # which is why a root is only trusted together with the size its checkpoint signs.
    other_size = data.draw(st.integers(1, MAX).filter(lambda s: s != n))
    if i >= other_size or len(tree.inclusion_proof(i, other_size)) != len(proof):
        with pytest.raises(ProofError):
            verify_inclusion(leaf, i, other_size, proof, r)


@given(two_sizes(), st.data())
def test_consistency_tampering_fails(case: tuple[int, int], data: st.DataObject) -> None:
    m, n = case
    tree = big_tree()
    proof, r1, r2 = tree.consistency_proof(m, n), tree.root(m), tree.root(n)
    bit = data.draw(st.integers(0, 255))
    with pytest.raises(ProofError):
        verify_consistency(m, n, flip(r1, bit), r2, proof)
    with pytest.raises(ProofError):
        verify_consistency(m, n, r1, flip(r2, bit), proof)
    if proof:
        k = data.draw(st.integers(0, len(proof) - 1))
        bad = proof[:k] + [flip(proof[k], bit)] + proof[k + 1 :]
        with pytest.raises(ProofError):
            verify_consistency(m, n, r1, r2, bad)
        with pytest.raises(ProofError):
            verify_consistency(m, n, r1, r2, proof[:-1])
    with pytest.raises(ProofError):
        verify_consistency(m, n, r1, r2, proof + [r2])
    other_m = data.draw(st.integers(0, n + 1).filter(lambda s: s != m))
    with pytest.raises(ProofError):
        verify_consistency(other_m, n, r1, r2, proof)
    # As for inclusion, a new size is only caught when it changes the proof's shape.
    other_n = data.draw(st.integers(1, MAX).filter(lambda s: s != n))
    if other_n < m or len(tree.consistency_proof(m, other_n)) != len(proof):
        with pytest.raises(ProofError):
            verify_consistency(m, other_n, r1, r2, proof)


@given(st.lists(st.integers(0, 42), max_size=7))  # at most MAX leaves
def test_batch_appends_equal_single_appends(batches: list[int]) -> None:
    total = sum(batches)
    one_by_one: list[tuple[int, int, bytes]] = []
    single = TreeAppender()
    for h in LEAF_HASHES[:total]:
        one_by_one += single.append([h])
    # Batched, and reopened from the store before every batch as a real writer would be.
    store: dict[tuple[int, int], bytes] = {}
    batched: list[tuple[int, int, bytes]] = []
    done = 0
    for count in batches:
        appender = TreeAppender(done, lambda lvl, idx: store[(lvl, idx)])
        new = appender.append(LEAF_HASHES[done : done + count])
        store.update(((lvl, idx), h) for lvl, idx, h in new)
        batched += new
        done += count
        assert appender.root() == root(done, lambda lvl, idx: store[(lvl, idx)])
    assert batched == one_by_one
    # Every stored node is exactly one complete subtree, each written once.
    assert len(store) == len(batched)
    for (lvl, idx), h in store.items():
        assert h == naive_mth(LEAF_HASHES[idx << lvl : (idx + 1) << lvl])


@given(size_and_index())
def test_batch_node_fetch_is_enough(case: tuple[int, int]) -> None:
    n, i = case
    tree = big_tree()
    m = i + 1
    fetched = {node: tree.node(*node) for node in nodes_needed_for_inclusion(i, n)}
    assert inclusion_proof(i, n, lambda lvl, idx: fetched[(lvl, idx)]) == tree.inclusion_proof(i, n)
    fetched = {node: tree.node(*node) for node in nodes_needed_for_consistency(m, n)}
    assert consistency_proof(m, n, lambda lvl, idx: fetched[(lvl, idx)]) == tree.consistency_proof(m, n)
    fetched = {node: tree.node(*node) for node in frontier_nodes(n)}
    assert root(n, lambda lvl, idx: fetched[(lvl, idx)]) == tree.root(n)
    assert len(frontier_nodes(n)) == n.bit_count()


@settings(max_examples=50)
@given(size_and_index())
def test_subtree_hash_rejects_non_subtrees(case: tuple[int, int]) -> None:
    n, start = case
    end = start + n
    aligned = start % (1 << (n - 1).bit_length()) == 0
    if aligned and end <= MAX:
        assert subtree_hash(start, end, big_tree().node) == naive_mth(LEAF_HASHES[start:end])
    elif not aligned:
        with pytest.raises(ValueError):
            subtree_hash(start, end, big_tree().node)


def test_generation_rejects_bad_arguments() -> None:
    tree = big_tree()
    for args in [(MAX,), (0, 0), (-1, 5), (5, 5)]:
        with pytest.raises(ValueError):
            tree.inclusion_proof(*args)
    for args in [(0, 5), (6, 5), (1, MAX + 1)]:
        with pytest.raises(ValueError):
            tree.consistency_proof(*args)
    assert tree.consistency_proof(7, 7) == []
