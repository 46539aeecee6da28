"""DICOM Message Service Element (DIMSE) adapter over mutual TLS (PS3.7, PS3.8, PS3.15 B.1).

A thin adapter: it authenticates the device (certificate bound to AE title),
translates DIMSE requests into calls of the device's core services
(``archive.services(principal)``) and their outcomes into DIMSE statuses. Authorization, integrity checks
and access records all happen in the core.
"""
