"""Accepted associations wait for work instead of polling for it (ADR 0018), and give back what they held.

pynetdicom's two loops per association polled every millisecond; the
archive's DIMSE service replaces those two sleeps by waits that a queued PDU,
message or pause request ends at once. Asserted here without any clock: an idle
association's loops wake a bounded number of times (a polling loop wakes about a
thousand times a second), every message still gets its answer, and associations
that end (released or aborted) close their wake-up sockets.
"""

from __future__ import annotations

import time

import pytest
from pydicom.dataset import Dataset
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from dicomguard.dimse import quiet_reactor
from tests.dicom_factory import ALICE, ct_series, dataset_of
from tests.test_serve_workers import tls_association


def _associate(creds, port: int):  # type: ignore[no-untyped-def]
    return tls_association(creds, port, StudyRootQueryRetrieveInformationModelFind)


def _served(dimse, n: int):  # type: ignore[no-untyped-def]
    for _ in range(200):
        accepted = [a for a in dimse.ae.active_associations if a.is_established]
        if len(accepted) >= n:
            return accepted
        time.sleep(0.02)
    raise AssertionError(f"{n} associations were not accepted")



def test_idle_associations_wake_rarely_and_every_request_is_answered(dimse, issue) -> None:  # type: ignore[no-untyped-def]
    creds = issue("QUIET_CT", department=None)
    clients = [_associate(creds, dimse.port) for _ in range(4)]
    try:
        accepted = _served(dimse, 4)
        wakeups = [getattr(a, "_dicomguard_wakeup", None) for a in accepted]
        assert all(w is not None for w in wakeups), "the archive's associations run the quiet reactor"
        before = [w.wakes for w in wakeups]
        time.sleep(1.0)  # idle: each loop wakes about every LONGEST_WAIT_S (a polling loop: ~1,000 times)
        woke = [w.wakes - b for w, b in zip(wakeups, before, strict=True)]
        assert all(n <= 2 * (1.0 / quiet_reactor.LONGEST_WAIT_S) + 10 for n in woke), woke

        # Work still reaches the loops at once and is answered, on each association, many times over.
        ds = dataset_of(ct_series(ALICE, n=1, seed=77)[0])
        assert clients[0].send_c_store(ds).Status == 0x0000
        for client in clients:
            for _ in range(20):
                assert client.send_c_echo().Status == 0x0000
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ds.StudyInstanceUID
        answers = [status.Status for status, _ in clients[1].send_c_find(query, StudyRootQueryRetrieveInformationModelFind)]
        assert answers == [0xFF00, 0x0000]
    finally:
        for client in clients:
            client.release()


@pytest.mark.parametrize("end", ["release", "abort"])
def test_associations_that_end_close_their_wakeup_sockets(dimse, issue, monkeypatch, end) -> None:  # type: ignore[no-untyped-def]
    attached: list[quiet_reactor.Wakeup] = []
    real_attach = quiet_reactor.attach

    def recording_attach(assoc):  # type: ignore[no-untyped-def]
        attached.append(real_attach(assoc))
        return attached[-1]

    monkeypatch.setattr(quiet_reactor, "attach", recording_attach)
    creds = issue("QUIET_END", department=None)
    for _ in range(10):
        client = _associate(creds, dimse.port)
        assert client.send_c_echo().Status == 0x0000
        client.release() if end == "release" else client.abort()
    for _ in range(200):
        if not dimse.ae.active_associations:
            break
        time.sleep(0.05)
    assert not dimse.ae.active_associations
    assert len(attached) == 10
    assert all(w.dul_r.fileno() == -1 and w.dul_w.fileno() == -1 for w in attached)  # 20 sockets, none left open


class _Assoc:
    """Stands in for an association: the checkpoint reads and writes only ``_is_paused``."""

    _is_paused = False


def _reactor_stopped_at(assoc, checkpoint):  # type: ignore[no-untyped-def]
    """A reactor round on its own thread, stopped at the (cleared) checkpoint; the thread and the event it sets once
    it passes."""
    import threading

    passed = threading.Event()

    def reactor_round() -> None:
        assoc._is_paused = True
        checkpoint.wait()
        passed.set()

    t = threading.Thread(target=reactor_round)
    t.start()
    for _ in range(500):
        if checkpoint.holding:
            break
        time.sleep(0.002)
    assert checkpoint.holding and assoc._is_paused is True
    return t, passed


def test_a_caller_pausing_the_reactor_waits_until_it_really_stopped() -> None:
    """pynetdicom's race, replayed step by step: the reactor has passed the checkpoint (its flag still says paused)
    when the caller clears it. The caller must not see "paused" until the reactor comes round and stops; with
    pynetdicom's own event it did, and the running reactor could take the caller's answer off the queue."""

    assoc = _Assoc()
    checkpoint = quiet_reactor._Checkpoint(assoc)  # type: ignore[arg-type]
    checkpoint.set()
    assoc._is_paused = True  # the reactor, at the top of its loop
    assert checkpoint.wait() is True  # ... passes the set checkpoint
    checkpoint.clear()  # the caller pauses it now
    assert assoc._is_paused is False  # pynetdicom would still report True here
    assoc._is_paused = False  # the reactor's own reset after wait()
    t, stopped = _reactor_stopped_at(assoc, checkpoint)  # its next round stops at the cleared checkpoint: now paused
    assert not stopped.is_set()
    checkpoint.set()  # the caller resumes it
    t.join(5)
    assert stopped.is_set() and not checkpoint.holding


def test_a_reactor_released_and_paused_again_before_it_moves_stays_stopped() -> None:
    """The other half of the race, replayed: the reactor is released (``set``) and, before it takes the guard again,
    a caller clears the checkpoint; that caller saw "paused" (the reactor was stopped at it) and sends. The reactor
    must stay stopped until the caller resumes it, or it takes the caller's answer off the queue (seen in CI as
    "Received unexpected C-ECHO service message" and a DIMSE timeout)."""
    import threading

    assoc = _Assoc()
    checkpoint = quiet_reactor._Checkpoint(assoc)  # type: ignore[arg-type]
    t, passed = _reactor_stopped_at(assoc, checkpoint)
    with checkpoint._guard:  # the reactor, woken by set(), cannot take the guard yet
        threading.Event.set(checkpoint)  # the previous caller resumes it ...
        time.sleep(0.05)  # ... the reactor wakes and waits for the guard ...
        threading.Event.clear(checkpoint)  # ... and the next caller pauses it first (clear() holds the guard too)
        assert checkpoint.holding and assoc._is_paused is True  # so that caller sees it stopped and sends
    t.join(0.3)
    assert t.is_alive() and not passed.is_set() and checkpoint.holding  # still stopped: the answer stays the caller's
    checkpoint.set()  # the caller resumes it
    t.join(5)
    assert passed.is_set() and not checkpoint.holding
