"""Accepted associations wait for work instead of polling for it (ADR 0018).

pynetdicom 3.0 runs two loops per association, the DUL reactor (reads PDUs,
sends primitives) and the association reactor (serves DIMSE messages), and
both sleep 1 ms between polls whenever they found nothing to do: each idle
association costs about 4 % of a core (measured: 8 idle associations, 31 %),
on the cores the archive's own work needs, and each hand-off between the two
loops waits up to a millisecond.

Here the two sleeps of an accepted association become waits that end as soon
as there is something to do, or after :data:`LONGEST_WAIT_S` (which keeps the
idle, ARTIM and kill checks of both loops running, just less often):

* the DUL reactor waits in ``select`` on its socket and a wake-up socket pair,
  written whenever a primitive or event is queued for it (or it is stopped);
* the association reactor waits on an event, set whenever the DUL hands it a
  message or primitive, when its DUL stops and when a caller pauses it.

Nothing else of pynetdicom changes: its loops run their own checks in their
own order; only the two sleeps are replaced, recognised by their caller's code
object, so any other sleep (a caller waiting for the reactor to pause) keeps
its own timing. Requestor associations (the gateway's upstream, C-MOVE
sub-associations) are left polling; every association made after installation,
requestor or acceptor, gets a pause checkpoint whose handshake holds
(:class:`_Checkpoint`: pynetdicom's can let its reactor take a fast peer's
answer away from the caller). If the pynetdicom installed is not the
3.0 series this was written against, nothing is installed and the loops poll
as before (logged once).
"""

from __future__ import annotations

import logging
import queue
import select
import socket
import ssl
import sys
import threading
import time as _time
from typing import Any

from pynetdicom import association as _association
from pynetdicom import dul as _dul
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider

from dicomguard.dimse.pynetdicom_patch import ProcessPatch

log = logging.getLogger(__name__)

LONGEST_WAIT_S = 0.05
"""How long an idle loop waits before it runs its timer and kill checks again (pynetdicom: 1 ms)."""



class Wakeup:
    """What wakes the two loops of one association."""

    def __init__(self) -> None:
        self.dul_r, self.dul_w = socket.socketpair()
        self.dul_r.setblocking(False)
        self.dul_w.setblocking(False)
        self.assoc = threading.Event()
        self.wakes = 0
        """Times a loop's wait ended (tests count these: an idle association should add few)."""

    def wake_dul(self) -> None:
        try:
            self.dul_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # a full pair is already readable; a closed one belongs to a finished association

    def drain_dul(self) -> None:
        try:
            while self.dul_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        self.dul_r.close()
        self.dul_w.close()


class _WakingQueue(queue.Queue):  # type: ignore[type-arg]
    """A queue that wakes a loop whenever something is put on it."""

    def __init__(self, wake: Any) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._wake()


class _Checkpoint(threading.Event):
    """An association reactor's pause checkpoint that reports "paused" only once the reactor stopped at it.

    A caller pausing pynetdicom's reactor (every ``send_*``, ``release``) clears this event, then waits until the
    association's ``_is_paused`` is True, then sends its request and reads the answer itself. The reactor sets
    ``_is_paused`` just before ``wait()`` and resets it just after. A caller that clears the event right after the
    reactor passed ``wait()`` still sees True, sends, and the running reactor may take the answer off the queue as
    an "unexpected" message: the caller then waits out its DIMSE timeout. The faster the peer answers, the likelier
    (seen with the archive's own waiting reactor as the peer). Here clearing the event also resets ``_is_paused``
    unless the reactor is stopped at it, and a reactor that stops at it sets it: "paused" now means stopped. A
    reactor released by ``set()`` leaves only if the checkpoint is still set once it holds the guard again: a caller
    that cleared it in between found it "paused" and is already sending. The reactor thread clearing its own
    checkpoint (its release on a network timeout) is left as pynetdicom has it.
    ``wake``: called after each clear (an accepted association's reactor wakes and stops at once).
    """

    def __init__(self, assoc: Association, wake: Any = None) -> None:
        super().__init__()
        self._assoc = assoc
        self._wake = wake
        self._guard = threading.Lock()
        self.holding = False
        """True while the reactor is stopped at this checkpoint."""

    def wait(self, timeout: float | None = None) -> bool:
        with self._guard:
            if self.is_set():
                return True
            self.holding = True
            self._assoc._is_paused = True  # type: ignore[attr-defined]
        try:
            while True:
                released = super().wait(timeout)
                with self._guard:
                    # Released, then cleared again by a caller before this thread took the guard: that caller saw
                    # "paused" and is sending, so the reactor must stay stopped (it would take the caller's answer).
                    if not released or self.is_set():
                        self.holding = False
                        return released
        except BaseException:
            with self._guard:
                self.holding = False
            raise

    def clear(self) -> None:
        with self._guard:
            super().clear()
            if not self.holding and threading.current_thread() is not self._assoc:
                self._assoc._is_paused = False  # type: ignore[attr-defined]
        if self._wake is not None:
            self._wake()


def _wait_in_dul(dul: Any, wakeup: Wakeup, delay: float) -> None:
    if dul._kill_thread or not dul.to_provider_queue.empty() or not dul.event_queue.empty():
        return
    sock = dul.socket.socket if dul.socket is not None else None
    if sock is None:
        _time.sleep(delay)
        return
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return  # decrypted bytes already buffered: select would not see them
    try:
        select.select([sock, wakeup.dul_r], [], [], LONGEST_WAIT_S)
    except (OSError, ValueError):
        _time.sleep(delay)  # the socket closed under us: the loop's own check reports it
        return
    wakeup.drain_dul()
    wakeup.wakes += 1


def _wait_in_association(assoc: Any, wakeup: Wakeup) -> None:
    if assoc._kill or not assoc.dimse.msg_queue.empty() or not assoc._reactor_checkpoint.is_set():
        return
    wakeup.assoc.wait(LONGEST_WAIT_S)
    wakeup.assoc.clear()
    wakeup.wakes += 1


class _ReactorClock:
    """Stands in for the ``time`` module inside pynetdicom's ``dul`` and ``association`` modules: the two reactor
    loops' sleeps wait for work (above); every other use is the real ``time``."""

    def __init__(self, dul_loop: Any, assoc_loop: Any) -> None:
        self._dul_loop = dul_loop
        self._assoc_loop = assoc_loop

    def sleep(self, delay: float) -> None:
        caller = sys._getframe(1).f_code
        if caller is self._dul_loop or caller is self._assoc_loop:
            thread = threading.current_thread()
            wakeup = getattr(thread, "_dicomguard_wakeup", None)
            if wakeup is not None:
                if caller is self._dul_loop:
                    _wait_in_dul(thread, wakeup, delay)
                else:
                    _wait_in_association(thread, wakeup)
                return
        _time.sleep(delay)

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)


def attach(assoc: Association) -> Wakeup:
    """Give an accepted association's loops their wake-up (before its threads start: the queues are replaced)."""
    wakeup = Wakeup()
    dul, dimse = assoc.dul, assoc.dimse
    dul.to_provider_queue = _WakingQueue(wakeup.wake_dul)  # primitives to send
    dul.event_queue = _WakingQueue(wakeup.wake_dul)  # state machine events
    dul.to_user_queue = _WakingQueue(wakeup.assoc.set)  # A-RELEASE / A-ABORT indications for the reactor
    dimse.msg_queue = _WakingQueue(wakeup.assoc.set)  # decoded DIMSE messages
    checkpoint = _Checkpoint(assoc, wakeup.assoc.set)
    checkpoint.set()
    assoc._reactor_checkpoint = checkpoint
    assoc._dicomguard_wakeup = wakeup  # type: ignore[attr-defined]
    dul._dicomguard_wakeup = wakeup  # type: ignore[attr-defined]
    reactor = dul._target  # type: ignore[attr-defined]  # the DUL thread's loop (threading.Thread keeps its target)

    def run_then_close() -> None:
        try:
            reactor()
        finally:
            wakeup.assoc.set()  # the association reactor notices its DUL stopped without waiting out a wait
            wakeup.close()

    dul._target = run_then_close  # type: ignore[attr-defined]
    return wakeup


_PATCH = ProcessPatch("its reactors keep polling")


def install() -> bool:
    """Install the waits for every association accepted from now on in this process; True if installed."""
    dul_loop = getattr(DULServiceProvider, "run_reactor", None)
    assoc_loop = getattr(Association, "_run_reactor", None)

    def fits() -> bool:
        return (dul_loop is not None and assoc_loop is not None
                and getattr(_dul, "time", None) is _time and getattr(_association, "time", None) is _time)

    def apply() -> None:
        assert dul_loop is not None and assoc_loop is not None
        original_init = Association.__init__
        original_stop_dul = DULServiceProvider.stop_dul

        def init(self: Association, *args: Any, **kwargs: Any) -> None:
            original_init(self, *args, **kwargs)
            if self.is_acceptor:
                attach(self)
            else:  # a requestor keeps polling, with a pause handshake that holds (``_Checkpoint``)
                checkpoint = _Checkpoint(self)
                checkpoint.set()
                self._reactor_checkpoint = checkpoint

        def stop_dul(self: DULServiceProvider) -> bool:
            wakeup = getattr(self, "_dicomguard_wakeup", None)
            if wakeup is None or self.state_machine.current_state != "Sta1":
                return original_stop_dul(self)
            self._kill_thread = True
            wakeup.wake_dul()
            while self.is_alive():
                _time.sleep(0.001)
            return True

        Association.__init__ = init  # type: ignore[method-assign]
        DULServiceProvider.stop_dul = stop_dul  # type: ignore[method-assign]
        clock = _ReactorClock(dul_loop.__code__, assoc_loop.__code__)
        _dul.time = clock  # type: ignore[attr-defined]
        _association.time = clock  # type: ignore[attr-defined]

    return _PATCH.install(fits, apply)
