"""One small object's work at a time per process: ingest and retrieval of objects the interpreter, not I/O, bounds.

Parsing, checking, hashing, encrypting and indexing a 10 KB object is interpreter work between short system calls
(open, read, write, close), each of which releases the interpreter lock. When several request threads do such work
at once, every one of those calls becomes a contended hand-over of the lock: measured on 2 cores, about 80 futex
calls per retrieved object and a third of the server's CPU in system time for 5 clients retrieving 10 KB slices,
and 0.9 s more system time for 5 clients storing 2,000 of them. Taking :data:`small_object_work` around such work
keeps one thread at it and leaves the interpreter to the event loop (TLS, HTTP) in between. Large objects are not
taken through it: their AES-GCM and SHA-256 run with the interpreter lock released, on every core.
"""

from __future__ import annotations

import threading

SMALL_OBJECT_BYTES = 256 * 1024
"""Objects below this size are interpreter-bound (measured per object, in-process on 2 cores: a 33 KB object verified
in 0.13 ms by one thread against 0.23 ms handed to a pool, a 131 KB one 0.24 against 0.27 ms, a 0.5 MB one 0.65
against 0.44 ms)."""

GROUP_OBJECTS = 16
"""Small objects worked on per hold of :data:`small_object_work` where several are ready (a retrieval's next objects,
STOW-RS parts that arrived while the interpreter was busy): one hand-over of the lock per group, a bounded hold."""

small_object_work = threading.Lock()
"""Held by a thread while it ingests or verifies small objects (a few at a time, never a whole request)."""
