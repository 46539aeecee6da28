"""The TLS client context of site-to-site transfer: mutual authentication against exactly one CA.

Security property: the peer is authenticated by a certificate chain to the one
CA file given (no system trust store is loaded, so a public CA cannot vouch
for a peer) and by its name (``check_hostname``: the URL's host must be in the
certificate's subject alternative names); we authenticate with our own client
certificate. TLS 1.2 minimum, forward-secret AEAD suites only, no compression
or renegotiation (RFC 8446; RFC 5246 with the BCP 195 / RFC 9325 profile of
:mod:`dicomguard.pki.tls`). ALPN offers only ``http/1.1`` (RFC 7301).
"""

from __future__ import annotations

import ssl
from pathlib import Path

from dicomguard.pki import tls as pki_tls

__all__ = ["client_context", "classify_tls_error"]


def client_context(ca_file: str | Path, cert_file: str | Path, key_file: str | Path) -> ssl.SSLContext:
    """A client context that verifies the peer against ``ca_file`` only, checks its host name and presents
    ``cert_file``/``key_file`` (PEM; the key unencrypted). Raises ``OSError``/``ssl.SSLError`` for unreadable
    or mismatched files."""
    ca_pem = Path(ca_file).read_bytes()
    cert_pem = Path(cert_file).read_bytes()
    key_pem = Path(key_file).read_bytes()
    ctx = pki_tls.client_context(ca_pem, cert_pem, key_pem, check_hostname=True)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def classify_tls_error(exc: ssl.SSLError) -> bool:
    """True if ``exc`` is a permanent TLS failure (verification, alert, protocol), False if only the
    connection was cut (EOF, close_notify), which a retry may get past."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return True
    # An alert from the peer (bad/unknown/expired certificate, certificate required, handshake failure,
    # protocol version) or a local protocol error: nothing a retry without a configuration change fixes.
    return not isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError | ssl.SSLWantReadError | ssl.SSLWantWriteError)
