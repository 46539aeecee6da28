"""C2SP tlog-checkpoint / signed-note: round trips, tampering, strict parsing, published vectors."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from dicomguard.ledger.checkpoint import (
    MAX_NOTE_BYTES,
    MAX_SIGNATURES,
    Checkpoint,
    CheckpointError,
    CheckpointSigner,
    CheckpointVerifier,
    _open_note,
    _sign_note,
    key_id,
)

ORIGIN = "dicomguard.example/ledger"
ROOT = hashlib.sha256(b"root").digest()
EM = "\u2014"


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def signer(key: Ed25519PrivateKey) -> CheckpointSigner:
    return CheckpointSigner(ORIGIN, key)


@pytest.fixture(scope="module")
def note(signer: CheckpointSigner) -> bytes:
    return signer.sign(Checkpoint(ORIGIN, 1234, ROOT))


def test_round_trip(signer: CheckpointSigner) -> None:
    for checkpoint in [
        Checkpoint(ORIGIN, 0, hashlib.sha256(b"").digest()),
        Checkpoint(ORIGIN, 1234, ROOT),
        Checkpoint(ORIGIN, 2**64 - 1, ROOT, ("ext one", "ext-2 \u00e9")),
    ]:
        assert Checkpoint.from_body(checkpoint.to_body()) == checkpoint
        assert signer.verifier().verify(signer.sign(checkpoint)) == checkpoint


def test_body_and_note_layout(signer: CheckpointSigner, note: bytes) -> None:
    body = f"{ORIGIN}\n1234\n{base64.b64encode(ROOT).decode()}\n".encode()
    assert Checkpoint(ORIGIN, 1234, ROOT).to_body() == body
    text, sep, sig_line = note.partition(b"\n\n")
    assert text + b"\n" == body and sep
    prefix = f"{EM} {ORIGIN} ".encode()
    assert sig_line.startswith(prefix) and sig_line.endswith(b"\n")
    raw = base64.b64decode(sig_line[len(prefix) : -1], validate=True)
    assert raw[:4] == signer.key_id and len(raw) == 4 + 64


def test_every_flipped_bit_fails(signer: CheckpointSigner, note: bytes) -> None:
    verifier = signer.verifier()
    for bit in range(len(note) * 8):
        tampered = bytearray(note)
        tampered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(CheckpointError):
            verifier.verify(bytes(tampered))


def test_other_key_fails(signer: CheckpointSigner) -> None:
    other_key = Ed25519PrivateKey.generate()
    note = CheckpointSigner(ORIGIN, other_key).sign(Checkpoint(ORIGIN, 5, ROOT))
    with pytest.raises(CheckpointError, match="not signed by"):
        signer.verifier().verify(note)
    # The same name and key id but another key's signature is a forgery, not an unknown key.
    forged = _sign_note(Checkpoint(ORIGIN, 5, ROOT).to_body(), ORIGIN, signer.key_id, other_key)
    with pytest.raises(CheckpointError, match="invalid signature"):
        signer.verifier().verify(forged)


def test_unknown_signatures_are_ignored(signer: CheckpointSigner, note: bytes) -> None:
    checkpoint = Checkpoint(ORIGIN, 1234, ROOT)
    witness = CheckpointSigner("witness.example/w1", Ed25519PrivateKey.generate())
    cosigned = witness.sign(checkpoint)
    witness_line = cosigned.partition(b"\n\n")[2]
    witness_verifier = CheckpointVerifier(witness.name, witness.verifier().public_key, origin=ORIGIN)
    for both in (note + witness_line, note.replace(b"\n\n", b"\n\n" + witness_line, 1)):
        assert signer.verifier().verify(both) == checkpoint
        assert witness_verifier.verify(both) == checkpoint
    with pytest.raises(CheckpointError, match="not signed by"):
        signer.verifier().verify(cosigned)


def test_wrong_origin_fails(signer: CheckpointSigner) -> None:
    note = signer.sign(Checkpoint("dicomguard.example/other-log", 5, ROOT))
    with pytest.raises(CheckpointError, match="origin"):
        signer.verifier().verify(note)
    verifier = CheckpointVerifier(signer.name, signer.verifier().public_key, origin="dicomguard.example/other-log")
    assert verifier.verify(note).origin == "dicomguard.example/other-log"


GOOD_ROOT = base64.b64encode(ROOT).decode()
MALFORMED_BODIES = {
    "leading zero size": f"o\n012\n{GOOD_ROOT}\n",
    "negative size": f"o\n-1\n{GOOD_ROOT}\n",
    "plus sign size": f"o\n+1\n{GOOD_ROOT}\n",
    "size with space": f"o\n 1\n{GOOD_ROOT}\n",
    "non-ASCII digits": f"o\n\u0661\n{GOOD_ROOT}\n",
    "size over uint64": f"o\n{2**64}\n{GOOD_ROOT}\n",
    "size of 5000 digits": f"o\n{'9' * 5000}\n{GOOD_ROOT}\n",
    "empty size": f"o\n\n{GOOD_ROOT}\n",
    "missing final newline": f"o\n1\n{GOOD_ROOT}",
    "missing root line": "o\n1\n",
    "bad base64": "o\n1\nnot*base64!\n",
    "unpadded base64": f"o\n1\n{GOOD_ROOT.rstrip('=')}\n",
    "non-canonical base64": f"o\n1\n{GOOD_ROOT[:-2]}{chr(ord(GOOD_ROOT[-2]) + 1)}=\n",
    "31-byte root": f"o\n1\n{base64.b64encode(ROOT[:31]).decode()}\n",
    "33-byte root": f"o\n1\n{base64.b64encode(ROOT + b'x').decode()}\n",
    "CRLF line endings": f"o\r\n1\r\n{GOOD_ROOT}\r\n",
    "trailing space": f"o\n1\n{GOOD_ROOT} \n",
    "empty origin": f"\n1\n{GOOD_ROOT}\n",
    "empty extension line": f"o\n1\n{GOOD_ROOT}\n\n",
    "tab in origin": f"o\tx\n1\n{GOOD_ROOT}\n",
    "invalid UTF-8": b"o\xff\n1\n" + GOOD_ROOT.encode() + b"\n",
}


@pytest.mark.parametrize("body", MALFORMED_BODIES.values(), ids=MALFORMED_BODIES.keys())
def test_malformed_body_rejected(body: str | bytes, signer: CheckpointSigner, key: Ed25519PrivateKey) -> None:
    raw = body if isinstance(body, bytes) else body.encode()
    with pytest.raises(CheckpointError):
        Checkpoint.from_body(raw)
    if raw.endswith(b"\n"):  # a note's text always ends with a newline
        # A valid signature does not make a malformed body acceptable.
        signed = _sign_note(raw, signer.name, signer.key_id, key)
        with pytest.raises(CheckpointError):
            CheckpointVerifier(signer.name, signer.verifier().public_key, origin="o").verify(signed)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"origin": "", "size": 1, "root_hash": ROOT},
        {"origin": "a\nb", "size": 1, "root_hash": ROOT},
        {"origin": "a\ud800", "size": 1, "root_hash": ROOT},
        {"origin": "o", "size": -1, "root_hash": ROOT},
        {"origin": "o", "size": 2**64, "root_hash": ROOT},
        {"origin": "o", "size": True, "root_hash": ROOT},
        {"origin": "o", "size": 1, "root_hash": ROOT[:31]},
        {"origin": "o", "size": 1, "root_hash": ROOT, "extensions": ("",)},
        {"origin": "o", "size": 1, "root_hash": ROOT, "extensions": ("a\nb",)},
        {"origin": "o", "size": 1, "root_hash": ROOT, "extensions": "ab"},
    ],
)
def test_invalid_checkpoint_fields_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(CheckpointError):
        Checkpoint(**kwargs)


def _split(note: bytes) -> tuple[bytes, bytes]:
    text, _, sig = note.partition(b"\n\n")
    return text + b"\n", sig


MALFORMED_NOTES = {
    "no blank line": lambda n: _split(n)[0] + _split(n)[1],
    "no final newline": lambda n: n[:-1],
    "no signature": lambda n: _split(n)[0] + b"\n",
    "CRLF": lambda n: n.replace(b"\n", b"\r\n"),
    "control character": lambda n: n.replace(b"\n\n", b"\n\x07\n\n", 1),
    "hyphen instead of em dash": lambda n: n.replace(EM.encode(), b"-"),
    "two spaces after dash": lambda n: n.replace(f"{EM} ".encode(), f"{EM}  ".encode()),
    "bad signature base64": lambda n: n[:-3] + b"*=\n",
    "signature shorter than 5 bytes": lambda n: _split(n)[0] + f"\n{EM} {ORIGIN} AAAAAA==\n".encode(),
    "too many signatures": lambda n: n + _split(n)[1] * MAX_SIGNATURES,
    "too large": lambda n: b"x" * MAX_NOTE_BYTES + n,
    "empty": lambda n: b"",
}


@pytest.mark.parametrize("make", MALFORMED_NOTES.values(), ids=MALFORMED_NOTES.keys())
def test_malformed_note_rejected(make: Callable[[bytes], bytes], signer: CheckpointSigner, note: bytes) -> None:
    with pytest.raises(CheckpointError):
        signer.verifier().verify(make(note))


def test_signature_limit_is_inclusive(signer: CheckpointSigner, note: bytes) -> None:
    assert signer.verifier().verify(note + _split(note)[1] * (MAX_SIGNATURES - 1)).size == 1234


def test_verifier_key_round_trip(signer: CheckpointSigner) -> None:
    vkey = signer.verifier().to_verifier_key()
    name, hash_hex, key_b64 = vkey.split("+", 2)
    assert name == ORIGIN and hash_hex == signer.key_id.hex()
    parsed = CheckpointVerifier.from_verifier_key(vkey)
    assert parsed.to_verifier_key() == vkey and parsed.origin == ORIGIN
    assert parsed.verify(signer.sign(Checkpoint(ORIGIN, 9, ROOT))).size == 9
    assert CheckpointVerifier.from_verifier_key(vkey, origin="x").origin == "x"
    bad_keys = [
        f"{name}+{hash_hex[:-1]}{'0' if hash_hex[-1] != '0' else '1'}+{key_b64}",  # wrong hash
        f"{name}+{hash_hex}",
        f"{name}+{hash_hex}+{key_b64[:-4]}",
        f"{name}+{hash_hex}+" + base64.b64encode(b"\x02" + base64.b64decode(key_b64)[1:]).decode(),
        f"other+name+{hash_hex}+{key_b64}",
        f"+{hash_hex}+{key_b64}",
        f"a b+{hash_hex}+{key_b64}",
    ]
    if hash_hex != hash_hex.upper():  # an all-digit key id has no upper-case form
        bad_keys.append(f"{name}+{hash_hex.upper()}+{key_b64}")
    for bad in bad_keys:
        with pytest.raises(CheckpointError):
            CheckpointVerifier.from_verifier_key(bad)


@pytest.mark.parametrize("name", ["", "a+b", "a b", "a\u00a0b", "a\nb"])
def test_invalid_key_names_rejected(name: str) -> None:
    with pytest.raises(CheckpointError):
        CheckpointSigner(name, Ed25519PrivateKey.generate())


# --- published vectors -----------------------------------------------------------------
# golang.org/x/mod/sumdb/note documentation and note_test.go (the EnochRoot key is the
# all-zero seed of the Go example's zero reader); c2sp.org/signed-note "Verifier keys" example.
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = b"If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
PETER_LINE = (
    f"{EM} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_LINE = (
    f"{EM} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
)
C2SP_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
C2SP_NOTE = (
    "This is an example message.\n\n"
    f"{EM} example.com/foo "
    "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
).encode()


def test_key_id_independent_computation() -> None:
    for vkey in (GO_VKEY, ENOCH_VKEY, C2SP_VKEY):
        name, hash_hex, key_b64 = vkey.split("+", 2)
        typed_key = base64.b64decode(key_b64)
        assert typed_key[0] == 1 and len(typed_key) == 33
        assert hashlib.sha256(name.encode() + b"\n" + typed_key).hexdigest()[:8] == hash_hex
        public_key = Ed25519PublicKey.from_public_bytes(typed_key[1:])
        assert key_id(name, public_key).hex() == hash_hex
        assert CheckpointVerifier(name, public_key).to_verifier_key() == vkey


def test_go_sumdb_note_known_answer() -> None:
    peter = CheckpointSigner.from_signer_key(GO_SKEY)
    assert peter.key_id.hex() == "c74f20a3"
    assert peter.verifier().to_verifier_key() == GO_VKEY
    # Ed25519 is deterministic: signing the published text must give the published note.
    typed_seed = base64.b64decode(GO_SKEY.split("+", 4)[4])
    assert typed_seed[0] == 1
    peter_key = Ed25519PrivateKey.from_private_bytes(typed_seed[1:])
    assert _sign_note(GO_TEXT, peter.name, peter.key_id, peter_key) == GO_TEXT + b"\n" + PETER_LINE.encode()
    enoch_key = Ed25519PrivateKey.from_private_bytes(bytes(32))
    enoch = CheckpointSigner("EnochRoot", enoch_key)
    assert enoch.verifier().to_verifier_key() == ENOCH_VKEY
    assert _sign_note(GO_TEXT, enoch.name, enoch.key_id, enoch_key) == GO_TEXT + b"\n" + ENOCH_LINE.encode()
    both = GO_TEXT + b"\n" + (PETER_LINE + ENOCH_LINE).encode()
    for vkey in (GO_VKEY, ENOCH_VKEY):
        v = CheckpointVerifier.from_verifier_key(vkey)
        assert _open_note(both, v.name, v.key_id, v.public_key) == GO_TEXT
    with pytest.raises(CheckpointError):
        CheckpointSigner.from_signer_key(GO_SKEY.replace("c74f20a3", "c74f20a4"))


def test_c2sp_signed_note_example() -> None:
    v = CheckpointVerifier.from_verifier_key(C2SP_VKEY)
    assert _open_note(C2SP_NOTE, v.name, v.key_id, v.public_key) == b"This is an example message.\n"
    with pytest.raises(CheckpointError):
        _open_note(C2SP_NOTE.replace(b"example message", b"example massage"), v.name, v.key_id, v.public_key)
    # It is a valid note but not a checkpoint: the checkpoint verifier refuses it.
    with pytest.raises(CheckpointError):
        v.verify(C2SP_NOTE)
