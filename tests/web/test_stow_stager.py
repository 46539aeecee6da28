"""The STOW-RS stager takes the parts that queued up together (``web.stow._waiting``), bounded and in order."""

from __future__ import annotations

import queue

from dicomguard.core.small_objects import GROUP_OBJECTS
from dicomguard.web import stow


def test_parts_that_queued_are_taken_together_up_to_the_group_bound_and_the_end_marker() -> None:
    parts: queue.SimpleQueue = queue.SimpleQueue()
    for i in range(GROUP_OBJECTS + 3):
        parts.put(i)
    parts.put(None)
    parts.put("after the end")  # never taken: the end marker closes the body
    assert stow._waiting(parts) == list(range(GROUP_OBJECTS))
    assert stow._waiting(parts) == [GROUP_OBJECTS, GROUP_OBJECTS + 1, GROUP_OBJECTS + 2, None]
    parts.put(7)
    assert stow._waiting(parts) == ["after the end", 7]  # only what is there: it does not wait for more


def test_a_part_is_released_as_soon_as_it_is_read_not_when_its_group_is_done() -> None:
    class Spool:
        closed = False

        def read(self) -> bytes:
            assert not self.closed
            return b"part"

        def close(self) -> None:
            self.closed = True

    spool = Spool()
    assert stow._read_and_release(spool) == b"part"  # type: ignore[arg-type]
    assert spool.closed
