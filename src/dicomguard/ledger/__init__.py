"""The integrity ledger: an RFC 9162 Merkle log of every stored object and security event.

``merkle`` and ``checkpoint`` are pure (bytes in, verdicts out); ``store`` persists
the tree in the index database; ``service`` appends in the same transaction as the
action it records and signs checkpoints; ``verify`` checks the whole archive.
"""
