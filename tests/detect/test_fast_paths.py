"""The detector's fast paths give what the straightforward code gives: times, syslog framing, XML extraction, medians,
z-scores, explanations, and the reading that overlaps context loading."""

from __future__ import annotations

import math
import random
import statistics
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from dicomguard.detect import AccessEvent, offline, parse_audit_line, read_audit_files
from dicomguard.detect import detector as det
from dicomguard.detect import events as ev
from dicomguard.detect.context import Context, ContextError, Order, UserInfo
from dicomguard.detect.explain import READING_GROUP, Explainer
from tests.detect.simulator import audit_xml, write_audit

T = datetime(2026, 3, 2, 10, 30, tzinfo=UTC)


# -- references: the straightforward code the fast paths replace ---------------------------------------------------


def _reference_time(value: str | None) -> datetime:
    if not value:
        raise ValueError("EventDateTime missing")
    v = value.strip()
    if v.endswith(("Z", "z")):
        v = v[:-1] + "+00:00"
    try:
        t = datetime.fromisoformat(v)
    except ValueError:
        raise ValueError("EventDateTime is not an xs:dateTime") from None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _reference_sd_end(line: bytes, pos: int) -> int:
    """RFC 5424 STRUCTURED-DATA scanned octet by octet."""
    in_quotes = False
    n = len(line)
    while pos < n:
        ch = line[pos]
        if ch == 0x5C and in_quotes:
            pos += 2
            continue
        if ch == 0x22:
            in_quotes = not in_quotes
        elif ch == 0x5D and not in_quotes and (pos + 1 >= n or line[pos + 1] != 0x5B):
            return pos + 1
        pos += 1
    raise ValueError("syslog structured data not terminated")


def _outcome(f: object, *args: object) -> tuple[str, object]:
    try:
        return "ok", f(*args)  # type: ignore[operator]
    except ValueError as exc:
        return "error", str(exc)


# -- times -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [
    "2026-03-02T10:30:00Z", "2026-03-02T10:30:00.123456Z", "2026-03-02T10:30:00.123Z", "2026-03-02T10:30:00z",
    "2026-03-02T10:30:00+00:00", "2026-03-02T12:30:00+02:00", "2026-03-02T05:00:00.5-05:30", "2026-03-02T10:30:00",
    " 2026-03-02T10:30:00Z ", "2026-03-02", "2026-03-02T10:30Z", "2026-03-02 10:30:00Z", "2026-03-02T23:59:59.999999-12:00",
    "", None, "yesterday", "2026-03-02T10:30:00ZZ", "2026-03-02T10:30:00+01:00Z", "2026-13-02T10:30:00Z",
])
def test_event_time_as_the_general_path_gives_it(value: str | None) -> None:
    got, want = _outcome(ev._parse_time, value), _outcome(_reference_time, value)
    assert got == want
    if got[0] == "ok":
        assert got[1].tzinfo is UTC  # type: ignore[union-attr]


# -- syslog framing ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sd", [
    b'[meta sequenceId="1"]', b'[a x="\\"]"][b y="2"]', b'[a x="]"]', b'[a x="\\\\"]', b'[a][b][c]', b'[a x="1" y="]["]',
    b'[a x="unterminated', b'[a x="\\', b'[a', b'[a]]', b'[a\\]', b'[a x="\\]\\"\\\\"]',
])
def test_structured_data_end_as_octet_by_octet(sd: bytes) -> None:
    line = b"<85>1 2026-03-02T10:30:00Z host app 1 MSG " + sd + b" <AuditMessage/>"
    start = len(line) - len(sd) - len(b" <AuditMessage/>")
    assert _outcome(ev._end_of_structured_data, line, start) == _outcome(_reference_sd_end, line, start)


def test_structured_data_end_on_random_octets() -> None:
    rng = random.Random(1)
    alphabet = [b'"', b"\\", b"]", b"[", b"a", b" ", b"="]
    for _ in range(20_000):
        line = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 16)))
        assert _outcome(ev._end_of_structured_data, line, 0) == _outcome(_reference_sd_end, line, 0), line


def test_syslog_wrapped_line_with_bom_and_crlf() -> None:
    from dicomguard.audit.syslog import format_message

    xml = audit_xml(AccessEvent(T, "alice", "view", ("P1",), address="10.0.0.7"))
    line = format_message(xml, time=T, hostname="pacs", procid="12", outcome=0, seq=7)
    assert b"\xef\xbb\xbf" in line
    e = parse_audit_line(line + b"\r\n")
    assert e is not None and (e.user, e.patients, e.time) == ("alice", ("P1",), T)
    assert e.event_id == ev.event_id_of(line)  # the id of the line without its ending


# -- XML extraction ----------------------------------------------------------------------------------------------


def _xml() -> bytes:
    return audit_xml(AccessEvent(T, "alice", "retrieve", ("P1",), ("1.2.3",), 12, "10.0.0.7", "WS-7"))


def test_id_type_code_found_wherever_it_is() -> None:
    base = parse_audit_line(_xml())
    assert base is not None and base.patients == ("P1",) and base.study_uids == ("1.2.3",) and base.instances == 12
    moved = _xml().replace(b"<ParticipantObjectIDTypeCode", b"<Extra/><ParticipantObjectIDTypeCode")
    e = parse_audit_line(moved)
    assert e is not None and (e.patients, e.study_uids, e.instances) == (base.patients, base.study_uids, base.instances)
    commented = _xml().replace(b"<ParticipantObjectIDTypeCode", b"<!-- note --><ParticipantObjectIDTypeCode")
    c = parse_audit_line(commented)
    assert c is not None and c.patients == base.patients and c.instances == base.instances


def test_event_identification_found_when_not_first() -> None:
    e = parse_audit_line(_xml().replace(b"<EventIdentification", b"<Extra/><EventIdentification", 1))
    assert e is not None and e.action == "retrieve"
    with pytest.raises(ValueError, match="EventIdentification missing"):
        parse_audit_line(_xml().replace(b"<EventIdentification", b"<Other", 1).replace(b"</EventIdentification>", b"</Other>", 1))


def test_namespaced_or_missing_parts_are_refused_as_before() -> None:
    with pytest.raises(ValueError, match="not a DICOM AuditMessage"):
        parse_audit_line(_xml().replace(b"<AuditMessage>", b'<AuditMessage xmlns="urn:x">'))
    no_time = _xml().replace(b'EventDateTime="', b'Other="')
    with pytest.raises(ValueError, match="EventDateTime missing"):
        parse_audit_line(no_time)
    no_user = _xml().replace(b' UserID="alice"', b"")
    with pytest.raises(ValueError, match="requesting user has no UserID"):
        parse_audit_line(no_user)


def test_time_zone_and_fraction_of_the_message() -> None:
    shifted = _xml().replace(b'EventDateTime="2026-03-02T10:30:00.000000Z"', b'EventDateTime="2026-03-02T12:30:00.25+02:00"')
    assert shifted != _xml()
    e = parse_audit_line(shifted)
    assert e is not None and e.time == T + timedelta(microseconds=250_000) and e.time.tzinfo is UTC


def test_utf16_document_hiding_a_doctype_is_still_refused() -> None:
    doc = ('<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE AuditMessage [<!ENTITY x "alice">]>'
           + _xml().decode().split("?>", 1)[1].replace('UserID="alice"', 'UserID="&x;"'))
    data = doc.encode("utf-16")
    assert b"<!DOCTYPE" not in data
    with pytest.raises(ValueError, match="DTDs and entities are not accepted"):
        ev.parse_xml(data)
    plain = ('<?xml version="1.0" encoding="UTF-16"?>' + _xml().decode().split("?>", 1)[1]).encode("utf-16")
    e = ev.parse_xml(plain)
    assert e is not None and e.user == "alice"


# -- statistics --------------------------------------------------------------------------------------------------


def test_median_is_statistics_median() -> None:
    rng = random.Random(2)
    for n in range(1, 40):
        for kind in (int, float):
            values = [kind(rng.randint(0, 9)) if kind is int else rng.random() * 10 for _ in range(n)]
            got, want = det._median(values), statistics.median(values)
            assert got == want and type(got) is type(want)
    with pytest.raises(ValueError):
        det._median([])
    assert det._robust([]) == (0.0, 1.0)


def test_z_scores_are_the_formula() -> None:
    rng = random.Random(3)
    rows = [(f"u{i % 5}", ("r", "d"), [float(rng.randint(0, 6)) for _ in range(det._N)]) for i in range(60)]
    stats = det._fit_stats(rows, 5)
    x = [rng.randint(0, 9) for _ in range(det._N)]
    u, p = stats.user["u1"], stats.peer[("r", "d")]
    assert det._z(stats, "u1", ("r", "d"), x) == [min((x[i] - u[i][0]) / u[i][1], (x[i] - p[i][0]) / p[i][1]) for i in range(det._N)]
    o = stats.overall
    assert det._z(stats, "nobody", ("x", "y"), x) == [(x[i] - o[i][0]) / o[i][1] for i in range(det._N)]
    empty = det._fit_stats([], 5)
    assert empty.overall == [(0.0, 1.0)] * det._N
    nan = [math.nan] * det._N
    assert [math.isnan(v) for v in det._z(stats, "u1", ("r", "d"), nan)] == [True] * det._N


def _fitted_detector() -> tuple[det.Detector, list[AccessEvent]]:
    from tests.detect.simulator import simulate

    sim = simulate(4, n_users=40, n_patients=400, baseline_days=10, scoring_days=4, per_kind=1)
    d = det.Detector(sim.context)
    d.fit(sim.baseline)
    return d, sim.scoring


def test_quiet_limits_never_skip_a_day_that_would_alert() -> None:
    """Counts under every limit always score below the threshold, also right at the limits; and the limits are not
    vacuous (days over them exist)."""
    d, _ = _fitted_detector()
    rng = random.Random(8)
    users = sorted(d._peer) + ["stranger"]
    checked = skipped = 0
    for _ in range(3000):
        user = rng.choice(users)
        limits = d._quiet_limits(user)
        assert len(limits) == det._N and all(math.isfinite(v) for v in limits)
        # Integer counts around the limits: the highest under each (ceil - 1), a little lower, a little higher, random.
        offsets = (-1, 0, 0, 0) if rng.random() < 0.5 else (-2, -1, 0, 1, 2)
        x = [max(0, math.ceil(v) - 1 + rng.choice(offsets)) if rng.random() < 0.9 else rng.randint(0, 60) for v in limits]
        under = all(a < b for a, b in zip(x, limits, strict=True))
        score, _ = det._learned_score(det._z(d._stats, user, d._peer.get(user, ("", "")), x), False)
        if under:
            skipped += 1
            assert score < d.threshold, (user, x, limits)
        checked += score >= d.threshold
    assert skipped > 300 and checked > 100
    # Limits follow what they were computed from: a new threshold gives new limits.
    before = d._quiet_limits(users[0])
    d.threshold *= 2
    assert d._quiet_limits(users[0]) != before
    d.threshold = math.inf
    assert d._quiet_limits(users[0]) == [math.inf] * det._N  # nothing can alert


def _old_merge(calls: list[tuple[tuple[str, ...], float, str, str, list[str]]], cap: int = det.MAX_ALERT_PATIENTS) -> dict[str, object]:
    """What raising and extending an alert gave before: every hit's patients and evidence merged in full."""
    patients, score, severity, explanation, evidence = calls[0]
    alert = {"patients": patients[:cap], "score": score, "severity": severity, "explanation": explanation,
             "evidence": list(dict.fromkeys(evidence))}
    for patients, score, severity, explanation, evidence in calls[1:]:
        alert["patients"] = tuple(dict.fromkeys((*alert["patients"], *patients)))[:cap]  # type: ignore[misc]
        if score > alert["score"]:  # type: ignore[operator]
            alert.update(score=score, severity=severity, explanation=explanation)
        have = set(alert["evidence"])  # type: ignore[arg-type]
        for item in evidence:
            if len(alert["evidence"]) >= 4 * det.MAX_EVIDENCE:  # type: ignore[arg-type]
                break
            if item not in have:
                have.add(item)
                alert["evidence"].append(item)  # type: ignore[union-attr]
    return alert


@pytest.mark.parametrize("cap", [det.MAX_ALERT_PATIENTS, 7])
def test_extending_an_alert_gives_what_merging_every_hit_gave(cap: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """An exfiltration day and snooping sessions: each alert's patients, evidence, score, severity and explanation are
    those of merging every hit in full (the old code), although extensions skip the work past the caps."""
    monkeypatch.setattr(det, "MAX_ALERT_PATIENTS", cap)
    d, scoring = _fitted_detector()
    t0 = scoring[0].time
    exporter = sorted(d._peer)[3]
    rng = random.Random(2)
    # Several patients per export: an extension then brings several new ones at once, whose order matters.
    extra = [AccessEvent(t0 + timedelta(seconds=20 * i), exporter, "export", tuple(f"X{rng.randint(0, 1500):04d}" for _ in range(4)),
                         event_id=f"x{i}") for i in range(700)]
    calls: dict[tuple[str, str, datetime], list[tuple[tuple[str, ...], float, str, str, list[str]]]] = {}
    raise_ = det.Detector._raise

    def recording(self: det.Detector, e: AccessEvent, kind: str, score: float, patients: object, details: object,
                  *, sort: bool = False) -> object:
        key = (e.user, kind)
        before = self._open.get(key)
        a = raise_(self, e, kind, score, patients, details, sort=sort)  # type: ignore[arg-type]
        alert = a or self._open[key]
        explanation, evidence = details()  # type: ignore[operator]
        if e.event_id:
            evidence.append(f"event {e.event_id}")
        listed = tuple(sorted(patients)) if sort else tuple(patients)  # type: ignore[call-overload]
        assert (a is None) == (before is alert)
        calls.setdefault((e.user, kind, alert.start), []).append((listed, score, alert.severity if a else _severity(self, kind, score),
                                                                  explanation, evidence))
        return a

    def _severity(self: det.Detector, kind: str, score: float) -> str:
        ratio = score / self.threshold
        severity = "low" if ratio < 1.25 else "medium" if ratio < 2 else "high" if ratio < 4 else "critical"
        return "medium" if kind in ("self-access", "family", "vip", "coworker", "neighbour") and severity == "low" else severity

    monkeypatch.setattr(det.Detector, "_raise", recording)
    for e in sorted(scoring + extra, key=lambda e: e.time):
        d.observe(e)
    assert d.alerts and max(len(v) for v in calls.values()) > 200  # long alerts, past the evidence cap
    for a in d.alerts:
        want = _old_merge(calls[(a.user, a.kind, a.start)], cap)
        assert (a.patients, a.score, a.severity, a.explanation, a.evidence) == (
            want["patients"], want["score"], want["severity"], want["explanation"], want["evidence"])


# -- explanations ------------------------------------------------------------------------------------------------


def test_order_added_after_the_explainer_still_explains() -> None:
    ctx = Context({"rad": UserInfo("rad", "Rad^Iologist", "radiologist", "rad-neuro", "")}, {}, [])
    explainer = Explainer(ctx)
    assert explainer.explain("rad", "P1", T) is None
    ctx.orders.append(Order("A1", "P1", "1.2", "MR", "doc", "neurology", T - timedelta(days=2), "rad-body | rad-neuro"))
    ctx.reindex()
    assert explainer.explain("rad", "P1", T) == READING_GROUP
    assert Explainer(ctx).explain("rad", "P1", T - timedelta(days=100)) is None  # long before the order


# -- reading -----------------------------------------------------------------------------------------------------


def _trail(tmp_path: Path, n: int) -> Path:
    events = [AccessEvent(T + timedelta(seconds=i), f"u{i % 7}", "view", (f"P{i}",)) for i in range(n)]
    path = tmp_path / "trail.log"
    write_audit(events, path, syslog_every=3)
    return path


def test_reading_stopped_early_stops_its_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ev, "_MIN_CHUNK", 2000)
    path = _trail(tmp_path, 200)
    reading = ev._start_reading(path, 2)
    first = next(reading)
    reading.close()
    assert first.user == "u0" and reading._workers is None
    events = read_audit_files(path, workers=2)
    assert next(events).user == "u0"
    events.close()  # type: ignore[attr-defined]


def test_a_bad_context_is_the_error_even_with_a_bad_trail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ev, "_MIN_CHUNK", 2000)
    path = _trail(tmp_path, 200)
    with open(path, "ab") as f:
        f.write(b"<AuditMessage>\n")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "users.csv").write_text("user_id,name\n")
    (ctx / "patients.csv").write_text("patient_id,name,address,vip\n")
    (ctx / "orders.csv").write_text("accession,patient_id,study_uid,modality,ordering_user,department,ordered_at,reading_group\n")
    with pytest.raises(ContextError, match="users.csv:1: missing column"):
        offline.detect_offline(path, ctx, T, workers=2)
    (ctx / "users.csv").write_text("user_id,name,role,department,home_address\n")
    with pytest.raises(ValueError, match=r"trail\.log:201: "):
        offline.detect_offline(path, ctx, T, workers=2)


def test_offline_scoring_is_the_same_with_any_number_of_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.detect.simulator import simulate, write_context

    monkeypatch.setattr(ev, "_MIN_CHUNK", 64 * 1024)
    sim = simulate(2, n_users=40, n_patients=400, baseline_days=10, scoring_days=4, per_kind=1)
    write_context(sim.context, tmp_path / "ctx")
    write_audit(sim.events, tmp_path / "audit.log", syslog_every=5)
    runs = [offline.detect_offline(tmp_path / "audit.log", tmp_path / "ctx", sim.baseline_until, workers=w) for w in (1, 2)]
    (a1, s1), (a2, s2) = runs
    assert [a.to_json() for a in a1] == [a.to_json() for a in a2]
    keep = ("events", "threshold", "calibration", "explained_share", "alerts")
    assert {k: s1[k] for k in keep} == {k: s2[k] for k in keep}
    memory = det.Detector(sim.context)
    memory.fit(sim.baseline)
    for e in sim.scoring:
        memory.observe(e)
    assert memory.threshold == s1["threshold"] and len(memory.alerts) == s1["alerts"]
    assert [(a.user, a.kind, a.start, a.end) for a in memory.alerts] == [(a.user, a.kind, a.start, a.end) for a in a1]


def test_times_in_other_zones_sort_and_score_as_utc() -> None:
    t = datetime(2026, 3, 2, 12, 30, tzinfo=timezone(timedelta(hours=2)))
    xml = audit_xml(AccessEvent(T, "alice", "view", ("P1",))).replace(b"2026-03-02T10:30:00.000000Z", t.isoformat().encode())
    e = parse_audit_line(xml)
    assert e is not None and e.time == T and e.time.tzinfo is UTC


# -- offline scoring: sort, learn, score ---------------------------------------------------------------------------


def _sorted_first(sim: object, ctx_dir: Path) -> tuple[list[dict[str, object]], float]:
    """The definition: all events sorted by time, learned before the baseline's end, the rest scored in order."""
    from dicomguard.detect.context import load_context_dir

    events = sorted(read_audit_files(ctx_dir.parent / "audit.log"), key=lambda e: e.time)
    baseline = [e for e in events if e.time < sim.baseline_until]  # type: ignore[attr-defined]
    d = det.Detector(load_context_dir(ctx_dir))
    d.fit(baseline)
    for e in events[len(baseline):]:
        d.observe(e)
    d.flush()
    return [a.to_json() for a in d.alerts], d.threshold


@pytest.fixture(scope="module")
def small_sim() -> object:
    from tests.detect.simulator import simulate

    return simulate(3, n_users=40, n_patients=400, baseline_days=10, scoring_days=4, per_kind=1)


@pytest.mark.parametrize("shuffle", ["in-order", "jittered", "one-late", "late-scored", "reversed-tail", "all-baseline"])
def test_offline_result_is_that_of_the_sorted_trail(tmp_path: Path, small_sim: object, shuffle: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the order of the lines, the result is that of the trail sorted by time (ties in file order); a trail
    whose lines are never more than the reorder window behind is scored while it is read (``in_order``)."""
    from tests.detect.simulator import write_context

    monkeypatch.setattr(ev, "_MIN_CHUNK", 64 * 1024)
    events = list(small_sim.events)  # type: ignore[attr-defined]
    until = small_sim.baseline_until  # type: ignore[attr-defined]
    in_order: bool | None = True
    if shuffle == "jittered":
        # Written in the order of clocks up to 14 minutes fast: a line is at most 14 minutes behind any line before it.
        rng = random.Random(5)
        events.sort(key=lambda e: e.time + timedelta(seconds=rng.uniform(0, 14 * 60)))
        assert [e.time for e in events] != sorted(e.time for e in events)  # ties broken by file order: still a shuffle
    elif shuffle == "one-late":
        events.append(events.pop(len(events) // 5))  # an early baseline event written at the end of the trail
        in_order = False
    elif shuffle == "late-scored":
        late = next(i for i, e in enumerate(events) if e.time >= until) + 10
        events.append(events.pop(late))  # a scored event days behind, after scoring began: it starts over
        in_order = False
    elif shuffle == "reversed-tail":
        events[-50:] = events[-50:][::-1]
        in_order = None  # depends on how long the last 50 lines took
    elif shuffle == "all-baseline":
        until = events[-1].time + timedelta(days=1)
    write_context(small_sim.context, tmp_path / "ctx")  # type: ignore[attr-defined]
    write_audit(events, tmp_path / "audit.log", syslog_every=5)
    small_sim_until = type("S", (), {"baseline_until": until})()
    want_alerts, want_threshold = _sorted_first(small_sim_until, tmp_path / "ctx")
    for workers in (1, 2):
        alerts, stats = offline.detect_offline(tmp_path / "audit.log", tmp_path / "ctx", until, workers=workers)
        assert [a.to_json() for a in alerts] == want_alerts
        assert stats["threshold"] == want_threshold and stats["events"] == len(events)
        assert stats["baseline_events"] == sum(1 for e in events if e.time < until)
        if in_order is not None:
            assert stats["in_order"] is (in_order is True)


def test_scoring_while_reading_releases_each_event_once_in_sorted_order() -> None:
    """InOrderScoring against a recording detector: every event observed once, in (time, arrival) order, none
    before the watermark has passed it, learning on exactly the events before ``baseline_until``."""
    rng = random.Random(11)
    base = T
    times = sorted(base + timedelta(seconds=rng.randint(0, 6 * 3600)) for _ in range(400))
    shuffled = sorted(range(len(times)), key=lambda i: times[i] + timedelta(seconds=rng.uniform(0, 600)))
    events = [AccessEvent(times[i], f"u{i % 9}", "view", (f"P{i}",), event_id=str(i)) for i in shuffled]
    until = base + timedelta(hours=2)

    class Recorder:
        def __init__(self) -> None:
            self.fitted: list[str] | None = None
            self.observed: list[str] = []

        def fit(self, baseline: list[AccessEvent]) -> None:
            assert self.fitted is None
            self.fitted = [e.event_id for e in baseline]

        def observe(self, e: AccessEvent) -> list[object]:
            assert self.fitted is not None
            self.observed.append(e.event_id)
            return []

        def flush(self) -> list[object]:
            return []

    run = offline.InOrderScoring(Context({}, {}, []), until, 1.0)
    run.detector = Recorder()  # type: ignore[assignment]
    latest = events[0].time
    for e in events:
        latest = max(latest, e.time)
        assert run.take(e)
        assert len(run.detector.observed) <= sum(1 for x in events if x.time < latest - offline.REORDER_WINDOW)  # type: ignore[attr-defined]
    run.finish()
    ordered = sorted(events, key=lambda e: e.time)  # stable: file order among equal times
    assert run.detector.fitted == [e.event_id for e in ordered if e.time < until]  # type: ignore[attr-defined]
    assert run.detector.observed == [e.event_id for e in ordered if e.time >= until]  # type: ignore[attr-defined]
    late = offline.InOrderScoring(Context({}, {}, []), until, 1.0)
    assert late.take(events[-1]) and not late.take(AccessEvent(events[-1].time - timedelta(minutes=16), "u1", "view", ("P",)))


def test_offline_scoring_restores_the_cycle_collector(tmp_path: Path, small_sim: object) -> None:
    import gc

    from tests.detect.simulator import write_context

    write_context(small_sim.context, tmp_path / "ctx")  # type: ignore[attr-defined]
    write_audit(list(small_sim.events)[:200], tmp_path / "audit.log")  # type: ignore[attr-defined]
    assert gc.isenabled()
    offline.detect_offline(tmp_path / "audit.log", tmp_path / "ctx", small_sim.baseline_until, workers=1)  # type: ignore[attr-defined]
    assert gc.isenabled()
    with pytest.raises(OSError):
        offline.detect_offline(tmp_path / "audit.log", tmp_path / "nowhere", small_sim.baseline_until, workers=1)  # type: ignore[attr-defined]
    assert gc.isenabled()
    gc.disable()
    try:
        offline.detect_offline(tmp_path / "audit.log", tmp_path / "ctx", small_sim.baseline_until, workers=1)  # type: ignore[attr-defined]
        assert not gc.isenabled()  # a caller's choice is kept
    finally:
        gc.enable()


def test_parsing_workers_run_at_lower_priority(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    def priority(task: tuple[str, int, int]) -> tuple[list[object], int, tuple[int, str]]:
        return [], 0, (1, f"nice {os.getpriority(os.PRIO_PROCESS, 0)}")  # the worker's own, reported as its error

    monkeypatch.setattr(ev, "_MIN_CHUNK", 2000)
    monkeypatch.setattr(ev, "_chunk_events", priority)
    want = min(19, os.getpriority(os.PRIO_PROCESS, 0) + ev._WORKER_NICENESS)
    with pytest.raises(ValueError, match=rf"trail\.log:1: nice {want}$"):
        list(read_audit_files(_trail(tmp_path, 200), workers=2))


def test_a_worker_that_dies_is_an_error_not_a_wait(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import signal

    real = ev._chunk_events

    def dies_after_the_first_range(task: tuple[str, int, int]) -> object:
        if task[1] > 0:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(task)

    monkeypatch.setattr(ev, "_MIN_CHUNK", 2000)
    monkeypatch.setattr(ev, "_chunk_events", dies_after_the_first_range)
    events = read_audit_files(_trail(tmp_path, 200), workers=2)
    assert next(events).user == "u0"  # the first range's events arrive
    with pytest.raises(RuntimeError, match="ended before its ranges were parsed"):
        list(events)


def _unreadable() -> object:
    raise TypeError("cannot be rebuilt")


class _Unreadable:
    def __reduce__(self) -> tuple[object, tuple[()]]:
        return _unreadable, ()  # pickles in the worker, fails to unpickle in the reader


def test_a_result_that_cannot_be_read_is_an_error_not_a_wait(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ev, "_MIN_CHUNK", 2000)
    monkeypatch.setattr(ev, "_chunk_events", lambda task: ([_Unreadable()], 1, None))
    with pytest.raises(RuntimeError, match=r"could not be read \(TypeError\)"):
        list(read_audit_files(_trail(tmp_path, 200), workers=2))


def test_stopping_while_workers_send_large_results_returns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers killed in the middle of sending a result leave nothing the reader waits on (a shared pool queue
    lock held by a killed worker once hung the stop forever)."""
    real = ev._chunk_events

    def large(task: tuple[str, int, int]) -> object:
        rows, lines, error = real(task)
        return rows * 2000, lines, error  # megabytes per result: sends are in flight when the stop comes

    monkeypatch.setattr(ev, "_MIN_CHUNK", 2000)
    monkeypatch.setattr(ev, "_chunk_events", large)
    path = _trail(tmp_path, 200)
    for _ in range(5):
        reading = ev._start_reading(path, 2)
        workers = reading._workers
        assert workers is not None
        assert next(reading).user == "u0"
        processes = list(workers._processes)
        reading.close()
        assert reading._workers is None and all(p._closed for p in processes)  # type: ignore[attr-defined]


def test_a_trail_error_comes_before_a_learning_error(tmp_path: Path, small_sim: object, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.detect.simulator import write_context

    write_context(small_sim.context, tmp_path / "ctx")  # type: ignore[attr-defined]
    write_audit(list(small_sim.events), tmp_path / "audit.log")  # type: ignore[attr-defined]

    def broken(self: det.Detector, baseline: object) -> None:
        raise RuntimeError("learning failed")

    monkeypatch.setattr(det.Detector, "fit", broken)
    with pytest.raises(RuntimeError, match="learning failed"):
        offline.detect_offline(tmp_path / "audit.log", tmp_path / "ctx", small_sim.baseline_until, workers=1)  # type: ignore[attr-defined]
    lines = (tmp_path / "audit.log").read_bytes().split(b"\n")
    lines.insert(len(lines) - 3, b"<AuditMessage>")
    (tmp_path / "audit.log").write_bytes(b"\n".join(lines))
    with pytest.raises(ValueError, match=rf"audit\.log:{len(lines) - 3}: "):
        offline.detect_offline(tmp_path / "audit.log", tmp_path / "ctx", small_sim.baseline_until, workers=1)  # type: ignore[attr-defined]
