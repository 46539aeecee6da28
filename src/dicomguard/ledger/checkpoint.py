"""Signed checkpoints: C2SP tlog-checkpoint bodies in C2SP signed-note envelopes, Ed25519 only.

Guarantee: :meth:`CheckpointVerifier.verify` returns a :class:`Checkpoint` only when the
note carries a valid Ed25519 signature (c2sp.org/signed-note, "Ed25519 signatures") from
the one configured key over a strictly formatted body (c2sp.org/tlog-checkpoint, "Note
text") whose origin is the expected one.  Every other outcome raises
:class:`CheckpointError`.  Key strings follow golang.org/x/mod/sumdb/note, so keys and
notes interoperate with Go tooling and C2SP witnesses.

Not guaranteed here: that the checkpoint is consistent with earlier ones (use a
consistency proof from :mod:`dicomguard.ledger.merkle`) or that it is fresh.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dicomguard.errors import DicomGuardError

MAX_NOTE_BYTES = 1 << 20
MAX_SIGNATURES = 100  # signed-note: verifiers SHOULD bound this and MUST accept 16
MAX_TREE_SIZE = (1 << 64) - 1  # tree sizes are uint64 in RFC 9162 and every C2SP implementation
HASH_SIZE = 32
ED25519_TYPE = b"\x01"  # signed-note "Signature types"

_SIG_PREFIX = "\u2014 "  # em dash, space
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")  # at most 20 digits: 2**64 - 1 has 20
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")  # signed-note: no ASCII controls but newline
_HEX8 = re.compile(r"[0-9a-f]{8}")


class CheckpointError(DicomGuardError):
    """A checkpoint, signed note or key string is malformed, unsigned or not trusted."""


def _b64decode(text: str, what: str) -> bytes:
    """Strict RFC 4648 section 4 base64: padded, no stray characters, canonical."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CheckpointError(f"{what} is not valid base64") from None
    # Re-encoding rejects non-zero padding bits, so each value has exactly one text form.
    if base64.b64encode(raw).decode("ascii") != text:
        raise CheckpointError(f"{what} is not canonical base64")
    return raw


def _check_line(value: str, what: str) -> None:
    """A non-empty line that a note may carry: encodable as UTF-8, no control characters."""
    try:
        ok = isinstance(value, str) and value != "" and not _CONTROL.search(value) and "\n" not in value
        ok = ok and bool(value.encode())
    except UnicodeEncodeError:  # lone surrogates
        ok = False
    if not ok:
        raise CheckpointError(f"{what} must be a non-empty line of UTF-8 text without control characters")


def _check_key_name(name: str) -> None:
    """signed-note: key names are non-empty, without Unicode spaces or '+'."""
    _check_line(name, "key name")
    if "+" in name or any(c.isspace() for c in name):
        raise CheckpointError(f"invalid key name {name!r}")


def key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    """SHA-256(key name || 0x0A || 0x01 || 32-byte public key)[:4], signed-note "Ed25519 signatures"."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(name.encode() + b"\n" + ED25519_TYPE + raw).digest()[:4]


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: origin, tree size and RFC 9162 root hash, plus opaque extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.extensions, tuple):
            raise CheckpointError("extensions must be a tuple")
        _check_line(self.origin, "origin")
        for line in self.extensions:
            _check_line(line, "extension line")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 0 <= self.size <= MAX_TREE_SIZE:
            raise CheckpointError("tree size must be an integer in [0, 2**64)")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != HASH_SIZE:
            raise CheckpointError(f"root hash must be {HASH_SIZE} bytes")

    def to_body(self) -> bytes:
        """The note text, tlog-checkpoint "Note text": one newline-terminated line per field."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode("ascii"), *self.extensions]
        return "".join(line + "\n" for line in lines).encode("utf-8")

    @classmethod
    def from_body(cls, body: bytes) -> Checkpoint:
        """Parse a note text strictly; the result re-serialises to exactly `body`."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError("checkpoint is not valid UTF-8") from None
        if not text.endswith("\n"):
            raise CheckpointError("checkpoint must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError("checkpoint needs origin, size and root hash lines")
        origin, size, root, *extensions = lines
        if not _DECIMAL.fullmatch(size):
            raise CheckpointError("tree size must be decimal without sign or leading zeros")
        return cls(origin, int(size), _b64decode(root, "root hash"), tuple(extensions))


def _open_note(note: bytes, name: str, kid: bytes, public_key: Ed25519PublicKey) -> bytes:
    """Return the text of a signed note that carries a valid signature by (name, kid).

    signed-note "Format" and "Signatures": unknown keys are ignored, a known key's bad
    signature rejects the note, and at least one known signature must verify.
    """
    if len(note) > MAX_NOTE_BYTES:
        raise CheckpointError("note is too large")
    try:
        decoded = note.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError("note is not valid UTF-8") from None
    if _CONTROL.search(decoded):
        raise CheckpointError("note contains control characters")
    split = note.rfind(b"\n\n")  # the text ends at the last blank line
    if split < 0:
        raise CheckpointError("note has no signature block")
    # Splitting at an ASCII byte keeps both halves valid UTF-8.
    text, sig_block = note[: split + 1], note[split + 2 :].decode("utf-8")
    if not sig_block.endswith("\n"):
        raise CheckpointError("note must end with a newline")
    lines = sig_block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise CheckpointError("note has too many signatures")
    verified = False
    for line in lines:
        if not line.startswith(_SIG_PREFIX):
            raise CheckpointError("malformed signature line")
        sig_name, _, b64 = line[len(_SIG_PREFIX) :].partition(" ")
        _check_key_name(sig_name)
        raw = _b64decode(b64, "signature")
        if len(raw) < 5:
            raise CheckpointError("signature is too short")
        if sig_name != name or raw[:4] != kid:
            continue  # another key, e.g. a witness cosignature: not ours to judge
        try:
            public_key.verify(raw[4:], text)
        except InvalidSignature:
            raise CheckpointError(f"invalid signature by {name}") from None
        verified = True
    if not verified:
        raise CheckpointError(f"note is not signed by {name}+{kid.hex()}")
    return text


def _sign_note(text: bytes, name: str, kid: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """A signed note of `text` with one Ed25519 signature line (signed-note "Format")."""
    signature = base64.b64encode(kid + private_key.sign(text)).decode("ascii")
    return text + f"\n{_SIG_PREFIX}{name} {signature}\n".encode()


class CheckpointSigner:
    """Signs checkpoints as a log.  The caller must never sign two inconsistent checkpoints."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        _check_key_name(name)
        self.name = name
        self._private_key = private_key
        self.key_id = key_id(name, private_key.public_key())

    @classmethod
    def from_signer_key(cls, skey: str) -> CheckpointSigner:
        """Load a golang.org/x/mod/sumdb/note signer key "PRIVATE+KEY+<name>+<hash>+<base64(0x01 || seed)>"."""
        parts = skey.split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"] or not _HEX8.fullmatch(parts[3]):
            raise CheckpointError("malformed signer key")
        raw = _b64decode(parts[4], "signer key")
        if len(raw) != 33 or raw[:1] != ED25519_TYPE:
            raise CheckpointError("signer key is not an Ed25519 key")
        signer = cls(parts[2], Ed25519PrivateKey.from_private_bytes(raw[1:]))  # any 32-byte seed is valid
        if signer.key_id.hex() != parts[3]:
            raise CheckpointError("signer key hash does not match its key")
        return signer

    def verifier(self) -> CheckpointVerifier:
        return CheckpointVerifier(self.name, self._private_key.public_key())

    def sign(self, checkpoint: Checkpoint) -> bytes:
        """The signed note of `checkpoint`, signed by this key."""
        return _sign_note(checkpoint.to_body(), self.name, self.key_id, self._private_key)


class CheckpointVerifier:
    """Verifies checkpoints signed by one Ed25519 key for one expected origin."""

    def __init__(self, name: str, public_key: Ed25519PublicKey, origin: str | None = None) -> None:
        """`origin` defaults to the key name, as tlog-checkpoint recommends they match."""
        _check_key_name(name)
        self.name = name
        self.public_key = public_key
        self.origin = name if origin is None else origin
        self.key_id = key_id(name, public_key)

    @classmethod
    def from_verifier_key(cls, vkey: str, origin: str | None = None) -> CheckpointVerifier:
        """Parse "<name>+<8 hex key id>+<base64(0x01 || public key)>" (golang.org/x/mod/sumdb/note)."""
        parts = vkey.split("+", 2)
        if len(parts) != 3 or not _HEX8.fullmatch(parts[1]):
            raise CheckpointError("malformed verifier key")
        raw = _b64decode(parts[2], "verifier key")
        if len(raw) != 33 or raw[:1] != ED25519_TYPE:
            raise CheckpointError("verifier key is not an Ed25519 key")
        try:
            public_key = Ed25519PublicKey.from_public_bytes(raw[1:])
        except ValueError:
            raise CheckpointError("verifier key is not a valid Ed25519 public key") from None
        verifier = cls(parts[0], public_key, origin)
        if verifier.key_id.hex() != parts[1]:
            raise CheckpointError("verifier key hash does not match its key")
        return verifier

    def to_verifier_key(self) -> str:
        raw = self.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(ED25519_TYPE + raw).decode('ascii')}"

    def verify(self, note: bytes) -> Checkpoint:
        """The checkpoint in `note`, if this key signed it and its origin is the expected one."""
        checkpoint = Checkpoint.from_body(_open_note(note, self.name, self.key_id, self.public_key))
        if checkpoint.origin != self.origin:
            raise CheckpointError(f"checkpoint origin {checkpoint.origin!r} is not {self.origin!r}")
        return checkpoint
