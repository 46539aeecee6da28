"""RFC 9162 section 2.1 Merkle hash tree over SHA-256: hashes, proofs, verifiers.

Guarantee: a proof accepted by :func:`verify_inclusion` or :func:`verify_consistency`
binds the leaf (or the older tree) to the given root under SHA-256 collision
resistance; both verifiers implement RFC 9162 2.1.3.2 and 2.1.4.2 step by step and
raise :class:`ProofError` on any failure.  Generated proofs are exactly RFC 9162
PATH (2.1.3.1) and PROOF/SUBPROOF (2.1.4.1), so any standard verifier accepts them.

Storage model: a persistent store keeps the hash of every *complete* subtree, keyed by
(level, index): level 0 index i is the leaf hash of leaf i; level L index i covers
leaves [i*2**L, (i+1)*2**L).  Incomplete right-edge subtrees are never stored, they
are recomputed from the O(log n) complete ones along the right edge.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

from dicomguard.errors import DicomGuardError

HASH_SIZE = 32
NodeId = tuple[int, int]  # (level, index)
NodeReader = Callable[[int, int], bytes]  # (level, index) -> stored hash
Range = tuple[int, int]  # leaves [start, end)

EMPTY_ROOT = hashlib.sha256(b"").digest()  # MTH({}), RFC 9162 2.1.1


class ProofError(DicomGuardError):
    """An inclusion or consistency proof did not verify (the message says why)."""


def leaf_hash(data: bytes) -> bytes:
    """MTH({d}) = HASH(0x00 || d), RFC 9162 2.1.1."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """HASH(0x01 || left || right), RFC 9162 2.1.1."""
    return hashlib.sha256(b"\x01" + left + right).digest()


# --- verification (RFC 9162 2.1.3.2, 2.1.4.2) -------------------------------------


def _check_hash(name: str, value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise ProofError(f"{name} is not a {HASH_SIZE}-byte hash")


def _walk(fn: int, sn: int, seed: bytes, path: Sequence[bytes], kind: str) -> tuple[bytes, bytes]:
    """The shared loop of RFC 9162 2.1.3.2 step 4 and 2.1.4.2 step 6, with the sn == 0 checks.

    Returns (fr, sr): sr is the root the path leads to; fr only uses the hashes to the
    left of the path, i.e. the root of the older tree in a consistency proof.
    """
    _check_hash(f"{kind} seed", seed)
    fr = sr = seed
    for i, c in enumerate(path):
        _check_hash(f"{kind} proof[{i}]", c)
        if sn == 0:
            raise ProofError(f"{kind} proof is too long")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            # A right-edge node has no sibling on the levels where fn is even: skip them.
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError(f"{kind} proof is too short")
    return fr, sr


def root_from_inclusion_proof(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root that `proof` implies for leaf `index` of a tree of `size` leaves (RFC 9162 2.1.3.2 steps 1-4).

    A verifier cannot tell two sizes apart whose proofs have the same shape (index 0 of 3
    and of 4 leaves): trust a root only together with the size its signed checkpoint names.
    """
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not in a tree of size {size}")
    return _walk(index, size - 1, leaf_hash, proof, "inclusion")[1]


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Check that `leaf_hash` is leaf `index` of the tree of `size` leaves with `root` (RFC 9162 2.1.3.2)."""
    _check_hash("root", root)
    if root_from_inclusion_proof(leaf_hash, index, size, proof) != root:
        raise ProofError("inclusion proof does not lead to the root")


def verify_consistency(size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]) -> None:
    """Check that the tree (size1, root1) is a prefix of the tree (size2, root2) (RFC 9162 2.1.4.2).

    size1 == 0 is refused: a proof from the empty tree proves nothing, and the
    transparency-dev vectors require the verifier to reject it.  For size1 == size2 the
    proof must be empty and the roots byte-equal (as the vectors require, their length is
    not checked then: nothing is derived from them).
    """
    if not 0 <= size1 <= size2:
        raise ProofError(f"sizes {size1} -> {size2} are not 0 <= size1 <= size2")
    if size1 == 0:
        raise ProofError("consistency with the empty tree cannot be proven")
    if size1 == size2:
        if proof:
            raise ProofError("sizes are equal but the proof is not empty")
        if root1 != root2:
            raise ProofError("sizes are equal but the roots differ")
        return
    _check_hash("root1", root1)
    _check_hash("root2", root2)
    if not proof:
        raise ProofError("consistency proof is empty")
    # Step 2: a power-of-two old tree is itself a node of the new one, so its root seeds the walk.
    path = [root1, *proof] if size1 & (size1 - 1) == 0 else list(proof)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:  # step 4
        fn, sn = fn >> 1, sn >> 1
    fr, sr = _walk(fn, sn, path[0], path[1:], "consistency")
    if fr != root1:
        raise ProofError("consistency proof does not lead to root1")
    if sr != root2:
        raise ProofError("consistency proof does not lead to root2")


# --- proof generation over stored complete subtrees (RFC 9162 2.1.3.1, 2.1.4.1) ----


def _split(n: int) -> int:
    """k, the largest power of two smaller than n (n > 1), RFC 9162 2.1.1."""
    return 1 << ((n - 1).bit_length() - 1)


def _range_nodes(start: int, end: int) -> list[NodeId]:
    """The stored complete subtrees that make up the RFC 9162 subtree [start, end), left to right.

    Below a node the RFC splits at the largest power of two, so a subtree of n leaves is
    its complete subtrees sized by the binary digits of n, largest first.
    """
    n = end - start
    if start < 0 or n <= 0 or start % (1 << (n - 1).bit_length()):
        raise ValueError(f"[{start}, {end}) is not a subtree of an RFC 9162 tree")
    nodes = []
    for level in range(n.bit_length() - 1, -1, -1):
        if n >> level & 1:
            nodes.append((level, start >> level))
            start += 1 << level
    return nodes


def _inclusion_ranges(index: int, size: int) -> list[Range]:
    """The subtrees whose hashes form PATH(index, D[size]), leaf side first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of size {size}")
    ranges = []
    start, end = 0, size
    while end - start > 1:
        mid = start + _split(end - start)
        if index < mid:
            ranges.append((mid, end))
            end = mid
        else:
            ranges.append((start, mid))
            start = mid
    return ranges[::-1]


def _consistency_ranges(size1: int, size2: int) -> list[Range]:
    """The subtrees whose hashes form PROOF(size1, D[size2]), i.e. SUBPROOF(m, D[n], true)."""
    if not 0 < size1 <= size2:
        raise ValueError(f"no consistency proof for sizes {size1} -> {size2}")
    ranges = []
    start, end, m, whole = 0, size2, size1, True
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start, m, whole = start + k, m - k, False
    if not whole:
        ranges.append((start, end))
    return ranges[::-1]


def _nodes_of(ranges: Iterable[Range]) -> list[NodeId]:
    return [node for start, end in ranges for node in _range_nodes(start, end)]


def nodes_needed_for_inclusion(index: int, size: int) -> list[NodeId]:
    """Every stored node that :func:`inclusion_proof` reads, so a store can fetch them in one query."""
    return _nodes_of(_inclusion_ranges(index, size))


def nodes_needed_for_consistency(size1: int, size2: int) -> list[NodeId]:
    """Every stored node that :func:`consistency_proof` reads."""
    return _nodes_of(_consistency_ranges(size1, size2))


def frontier_nodes(size: int) -> list[NodeId]:
    """The complete subtrees along the right edge of a tree of `size` leaves, left to right.

    One per set bit of `size`: all that :func:`root` reads and all an appender needs to know.
    """
    return _range_nodes(0, size) if size else []


def _fold(hashes: list[bytes]) -> bytes:
    """Combine a subtree's complete parts (left to right) right to left, as the RFC recursion nests."""
    h = hashes[-1]
    for left in reversed(hashes[:-1]):
        h = node_hash(left, h)
    return h


def subtree_hash(start: int, end: int, get_node: NodeReader) -> bytes:
    """MTH(D[start:end]) for an RFC 9162 subtree, from O(log n) stored complete subtrees."""
    return _fold([get_node(level, index) for level, index in _range_nodes(start, end)])


def root(size: int, get_node: NodeReader) -> bytes:
    """MTH(D[size]), RFC 9162 2.1.1; EMPTY_ROOT for size 0."""
    return subtree_hash(0, size, get_node) if size else EMPTY_ROOT


def inclusion_proof(index: int, size: int, get_node: NodeReader) -> list[bytes]:
    """PATH(index, D[size]), RFC 9162 2.1.3.1; at most ceil(log2(size)) hashes."""
    return [subtree_hash(s, e, get_node) for s, e in _inclusion_ranges(index, size)]


def consistency_proof(size1: int, size2: int, get_node: NodeReader) -> list[bytes]:
    """PROOF(size1, D[size2]), RFC 9162 2.1.4.1, for 0 < size1 <= size2 (empty when equal)."""
    return [subtree_hash(s, e, get_node) for s, e in _consistency_ranges(size1, size2)]


# --- appending ---------------------------------------------------------------------


class TreeAppender:
    """Computes the complete subtrees created by appending leaves to a stored tree.

    Reads only the frontier once, then keeps it in memory, so a batch costs no reads
    and about one node hash per leaf.  Not thread-safe: one appender per writer, whose
    starting size must be the size the store holds.
    """

    def __init__(self, size: int = 0, get_node: NodeReader | None = None) -> None:
        if size < 0:
            raise ValueError("tree size must be >= 0")
        if size and get_node is None:
            raise ValueError("a non-empty tree needs a node reader for its frontier")
        self._size = size
        # Hashes of the frontier subtrees, largest (leftmost) first: one per set bit of size.
        self._frontier = [get_node(lvl, idx) for lvl, idx in frontier_nodes(size)] if get_node else []

    @property
    def size(self) -> int:
        return self._size

    def frontier_hashes(self) -> list[bytes]:
        """The current right-edge subtree hashes, in :func:`frontier_nodes` order."""
        return list(self._frontier)

    def root(self) -> bytes:
        """The root of the tree appended so far, from the in-memory frontier."""
        return _fold(self._frontier) if self._frontier else EMPTY_ROOT

    def append(self, leaf_hashes: Iterable[bytes]) -> list[tuple[int, int, bytes]]:
        """Append leaf hashes; return the new complete nodes (level, index, hash) to persist, leaves included.

        All or nothing: a malformed hash raises ValueError before any state changes.
        """
        leaf_hashes = list(leaf_hashes)
        if not all(isinstance(h, bytes) and len(h) == HASH_SIZE for h in leaf_hashes):
            raise ValueError(f"leaf hashes must be {HASH_SIZE} bytes")
        out = []
        frontier = self._frontier
        for h in leaf_hashes:
            index, level = self._size, 0
            out.append((0, index, h))
            # Each trailing one bit of the old size is a same-sized left sibling to merge with.
            while index & 1:
                h = node_hash(frontier.pop(), h)
                index >>= 1
                level += 1
                out.append((level, index, h))
            frontier.append(h)
            self._size += 1
        return out


class MemoryTree:
    """An in-memory tree on the same storage model (one list of node hashes per level)."""

    def __init__(self) -> None:
        self._levels: list[list[bytes]] = []
        self._appender = TreeAppender()

    @property
    def size(self) -> int:
        return self._appender.size

    def append(self, data: bytes) -> int:
        """Append one entry; return its leaf index."""
        return self.append_leaf_hash(leaf_hash(data))

    def append_leaf_hash(self, h: bytes) -> int:
        self.extend_leaf_hashes([h])
        return self.size - 1

    def extend_leaf_hashes(self, hashes: Iterable[bytes]) -> None:
        # The appender yields nodes in index order on every level, so appending keeps lists dense.
        for level, _index, h in self._appender.append(hashes):
            if level == len(self._levels):
                self._levels.append([])
            self._levels[level].append(h)

    def node(self, level: int, index: int) -> bytes:
        """The stored complete subtree (level, index); a :data:`NodeReader`."""
        if index < 0:  # a negative list index would silently read another node
            raise IndexError(index)
        return self._levels[level][index]

    def _size_arg(self, size: int | None) -> int:
        size = self.size if size is None else size
        if not 0 <= size <= self.size:
            raise ValueError(f"size {size} exceeds the tree size {self.size}")
        return size

    def root(self, size: int | None = None) -> bytes:
        return root(self._size_arg(size), self.node)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return inclusion_proof(index, self._size_arg(size), self.node)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        return consistency_proof(size1, self._size_arg(size2), self.node)
