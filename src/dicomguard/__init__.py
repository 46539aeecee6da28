"""dicomguard: an encrypted, write-once, tamper-evident DICOM archive.

The public surface for programs is :class:`dicomguard.app.archive.Archive` and its services;
everything a protocol adapter needs goes through it so that no adapter can
skip authorization, integrity checks or audit.
"""

__version__ = "0.1.0"
