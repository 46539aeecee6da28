"""The archive's own certificate authority, device certificates and TLS contexts.

Keys never touch the disk in clear: CA and server keys are wrapped by the KEK
in the index; at run time the server key reaches OpenSSL through an anonymous
in-memory file (``memfd_create``), not a key file.
"""
