"""Cryptography for dicomguard: sealing, wrapping, blob encryption, blind indexes.

Only AES-256-GCM, HKDF-SHA256, HMAC-SHA256, argon2id and Ed25519 are used, all
from pyca/cryptography and argon2-cffi. Nonces are never chosen by callers.
"""
