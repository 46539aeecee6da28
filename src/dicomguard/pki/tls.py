"""TLS contexts: TLS 1.2 minimum (1.3 preferred), forward-secret AEAD suites only, mutual auth.

Follows BCP 195 (RFC 9325): no TLS 1.0/1.1, no RSA key exchange, no CBC, no
compression, no renegotiation. Server keys are handed to OpenSSL through an
in-memory file so the key never exists in clear on disk.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

# TLS 1.2 suites: ECDHE with AES-GCM or ChaCha20-Poly1305 only (RFC 9325 4.2).
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


@contextmanager
def _memory_file(content: bytes) -> Iterator[str]:
    """A path to ``content`` that lives only in memory (Linux memfd), closed afterwards."""
    fd = os.memfd_create("dicomguard-key", flags=getattr(os, "MFD_CLOEXEC", 0))
    try:
        os.write(fd, content)
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def _harden(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    return ctx


def load_chain(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    with _memory_file(cert_pem) as cert_path, _memory_file(key_pem) as key_path:
        ctx.load_cert_chain(cert_path, key_path)


def server_context(cert_pem: bytes, key_pem: bytes, client_ca_pem: bytes | None) -> ssl.SSLContext:
    """Server side. With ``client_ca_pem`` the peer must present a certificate from that CA."""
    ctx = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    load_chain(ctx, cert_pem, key_pem)
    if client_ca_pem is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=client_ca_pem.decode("ascii"))
    return ctx


def client_context(ca_pem: bytes, cert_pem: bytes | None = None, key_pem: bytes | None = None, check_hostname: bool = True) -> ssl.SSLContext:
    """Client side: verifies the server against ``ca_pem``; presents a client certificate if given."""
    ctx = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    ctx.check_hostname = check_hostname
    ctx.load_verify_locations(cadata=ca_pem.decode("ascii"))
    if cert_pem is not None and key_pem is not None:
        load_chain(ctx, cert_pem, key_pem)
    return ctx
