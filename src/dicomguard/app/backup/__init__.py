"""Backups, restore drills and restores (ADR 0007): 3-2-1-1-0 with an immutable copy and erasure that reaches backups."""
