"""The index: SQLAlchemy models and queries. Holds no plaintext PHI.

Identifying attributes live in ``phi`` columns sealed with AES-256-GCM under a
key derived from the patient's data key; searchable ones also have keyed blind
indexes (:mod:`dicomguard.crypto.blind_index`).
"""
