"""Access-anomaly detection over audit events: explanations, signatures and learned behaviour, calibrated to a budget.

Three layers, as privacy-monitoring systems in hospitals combine them (Boxwala
et al., JAMIA 18(5), 2011; Fabbri and LeFevre, PVLDB 5(1), 2011):

1. every access is first *explained* (:mod:`dicomguard.detect.explain`); only
   unexplained accesses can raise snooping signatures;
2. *signatures* (:mod:`dicomguard.detect.signatures`, plus break-glass reason
   quality, dormant accounts and accesses to patients with no encounter) score
   what a single access reveals;
3. *learned behaviour*: per-user and peer-group (role, department) robust models
   of daily features (distinct patients, new patients, unexplained patients,
   exported patients, retrieved/queried patients, events at the user's unusual
   hours, break-glass grants, failed logins). A feature's anomaly is a robust
   z-score (median and MAD, with a Poisson floor for small counts) that must be
   high against *both* the user's own history and the peer group's, so that a
   clerk who exports every day is judged against exporting clerks.

Why robust z-scores rather than an isolation forest: the features are few,
counted and interpretable; the z-scores say which feature stood out and by how
much (the evidence a privacy officer needs); they are fast enough to update on
every event; and a one-dimensional score per user-day is what the budget
calibration below needs.

Calibration: the alert threshold is not fixed. :meth:`Detector.fit` replays the
baseline, scores every user-day out of sample (the statistics of odd days score
even days and vice versa, so a day never judges itself) and sets the threshold
so that at most :data:`CALIBRATION_MARGIN` (half) of ``alert_budget_per_1000_user_days``
of baseline user-days would raise an alert: alerts are rare days, and a period's
count of rare days varies by about its square root, so a threshold aimed at the whole
budget would exceed it in about half of the periods. A self-access is a policy
violation and is raised regardless (the baseline decides nothing there). Alerts aggregate per user and kind: an
alert stays open while new hits of its kind come within its session gap, so one
snooping session or one exfiltration day is one alert.
"""

from __future__ import annotations

import math
import operator
from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Final

from dicomguard.detect import explain as ex
from dicomguard.detect import signatures as sig
from dicomguard.detect.context import Context
from dicomguard.detect.events import ACCESS_ACTIONS, AccessEvent

FEATURES: Final = ("patients", "new_patients", "unexplained", "export", "bulk", "after_hours", "break_glass",
                   "failed_logins")
FEATURE_KIND: Final = {
    "patients": "volume", "new_patients": "volume", "unexplained": "snooping", "export": "bulk-export",
    "bulk": "bulk-retrieve", "after_hours": "unusual-hours", "break_glass": "break-glass-abuse",
    "failed_logins": "failed-logins",
}
FEATURE_WORDS: Final = {
    "patients": "distinct patients accessed", "new_patients": "patients the user had never accessed before",
    "unexplained": "patients accessed without a clinical explanation", "export": "patients exported",
    "bulk": "patients retrieved or queried", "after_hours": "events at hours this user does not work",
    "break_glass": "break-glass grants", "failed_logins": "failed logins",
}
_N: Final = len(FEATURES)
_PATIENTS, _NEW, _UNEXPL, _EXPORT, _BULK, _AFTER, _BG, _FAILED = range(_N)

BREAK_GLASS_REASON: Final = "break-glass-reason"
DORMANT: Final = "dormant-account"
SLOW: Final = "slow-snooping"
COMPROMISED: Final = "compromised-credentials"

SIGNATURE_WEIGHT: Final = {
    sig.SELF: 12.0, sig.FAMILY: 10.0, sig.NEIGHBOUR: 9.0, sig.COWORKER: 9.0, sig.VIP: 9.0,
    BREAK_GLASS_REASON: 4.0, DORMANT: 9.0, SLOW: 2.5,
}
"""Points per signature hit, on the scale of the learned z-scores; the calibrated threshold decides what alerts."""

NO_ENCOUNTER_FACTOR: Final = 1.25
"""A snooping signature on a patient with no order anywhere in the hospital around the access weighs this much more:
nobody is treating the patient, so no unrecorded consult or cover can explain it (our reasoning, in line with
explanation-based auditing: an access no clinical event accounts for is the one to review)."""
NO_ENCOUNTER_WORDS: Final = ", and nobody in the hospital has an order for the patient around that time"

NEW_ADDRESS_POINTS: Final = 3.0
"""Added to a day's learned score when the user works from an address never seen for them (stolen credentials)."""

SESSION_GAP: Final = {SLOW: timedelta(days=28), BREAK_GLASS_REASON: timedelta(days=14), DORMANT: timedelta(days=1)}
DEFAULT_GAP: Final = timedelta(hours=12)
SLOW_WINDOW: Final = timedelta(days=28)
DORMANT_AFTER: Final = timedelta(days=30)
WARM_UP_DAYS: Final = 7
"""Baseline days whose scores do not count for calibration: addresses, colleagues and histories are still empty."""
MIN_THRESHOLD: Final = 4.0
CALIBRATION_MARGIN: Final = 0.5
"""Share of the alert budget the baseline may use: the rest absorbs the period-to-period variation of rare days."""
MAX_EVIDENCE: Final = 50
MAX_ALERT_PATIENTS: Final = 1000
"""Patients an alert names at most (the first ones, in the order found)."""


@dataclass
class Alert:
    user: str
    start: datetime
    end: datetime
    kind: str
    severity: str
    patients: tuple[str, ...]
    explanation: str
    evidence: list[str] = field(default_factory=list)
    score: float = 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "user": self.user, "start": self.start.isoformat(), "end": self.end.isoformat(), "kind": self.kind,
            "severity": self.severity, "patients": list(self.patients), "explanation": self.explanation,
            "evidence": list(self.evidence), "score": round(self.score, 3),
        }


# -- robust statistics -----------------------------------------------------------------------------------------


def _median(values: Iterable[float]) -> float:
    """The value of :func:`statistics.median` (the middle of the sorted values, or the mean of the two middle ones:
    the same operations, so the same float), without its overhead: fitting takes thousands of medians."""
    data = sorted(values)
    n = len(data)
    if n == 0:
        raise ValueError("no median for empty data")
    i = n // 2
    if n % 2 == 1:
        return data[i]
    return (data[i - 1] + data[i]) / 2


def _robust(values: Sequence[float]) -> tuple[float, float]:
    """(median, scale): scale is 1.4826 MAD floored by sqrt(median + 1), the spread of a Poisson count."""
    if not values:
        return 0.0, 1.0
    m = _median(values)
    mad = _median([abs(v - m) for v in values])
    return m, max(1.4826 * mad, math.sqrt(m + 1.0))


@dataclass
class _Stats:
    user: dict[str, list[tuple[float, float]]]
    peer: dict[tuple[str, str], list[tuple[float, float]]]
    overall: list[tuple[float, float]]


def _fit_stats(rows: list[tuple[str, tuple[str, str], list[float]]], min_days: int) -> _Stats:
    by_user: dict[str, list[list[float]]] = {}
    by_peer: dict[tuple[str, str], list[list[float]]] = {}
    for user, peer, x in rows:
        by_user.setdefault(user, []).append(x)
        by_peer.setdefault(peer, []).append(x)

    def fit(vectors: list[list[float]]) -> list[tuple[float, float]]:
        if not vectors:
            return [_robust(()) for _ in range(_N)]
        return [_robust(column) for column in zip(*vectors, strict=True)]  # the feature columns, transposed once

    return _Stats({u: fit(v) for u, v in by_user.items() if len(v) >= min_days},
                  {p: fit(v) for p, v in by_peer.items()}, fit([x for _, _, x in rows]))


def _z(stats: _Stats, user: str, peer: tuple[str, str], x: Sequence[float]) -> list[float]:
    p = stats.peer.get(peer, stats.overall)
    u = stats.user.get(user)
    if u is None:
        return [(v - pm) / ps for v, (pm, ps) in zip(x, p, strict=True)]
    # min(a, b) inlined as "b if b < a else a", exactly what min returns (the first of equal values), for every
    # feature of every scored event.
    return [b if (b := (v - pm) / ps) < (a := (v - um) / us) else a for v, (um, us), (pm, ps) in zip(x, u, p, strict=True)]


def _below(limit: float) -> float:
    """``limit`` lowered by a relative millionth (see :meth:`Detector._quiet_limits`)."""
    return limit - 1e-6 * (1.0 + abs(limit))


def _learned_score(z: Sequence[float], new_address: bool) -> tuple[float, int]:
    """Top z plus half the second (two moderate anomalies together count), plus the new-address points."""
    top = second = 0.0
    arg = 0
    for i, v in enumerate(z):
        if v > top:
            top, second, arg = v, top, i
        elif v > second:
            second = v
    return top + 0.5 * second + (NEW_ADDRESS_POINTS if new_address else 0.0), arg


# -- per-user streaming state ------------------------------------------------------------------------------------


class _User:
    __slots__ = (
        "addresses",
        "d_after",
        "d_bg",
        "d_bulk",
        "d_events",
        "d_export",
        "d_failed",
        "d_hits",
        "d_new",
        "d_new_address",
        "d_patients",
        "d_unexpl",
        "day",
        "hours",
        "hours_total",
        "last",
        "poor_bg",
        "reasons",
        "seen",
        "slow",
        "workstations",
    )

    def __init__(self) -> None:
        self.day: date | None = None
        self.seen: set[str] = set()
        self.addresses: set[str] = set()
        self.workstations: set[str] = set()
        self.hours = [0] * 24
        self.hours_total = 0
        self.last: datetime | None = None
        self.reasons: deque[str] = deque(maxlen=20)
        self.slow: deque[tuple[datetime, str, str]] = deque()
        self.poor_bg: deque[tuple[datetime, str]] = deque()
        self._reset(None)

    def _reset(self, day: date | None) -> None:
        self.day = day
        self.d_patients: set[str] = set()
        self.d_new: set[str] = set()
        self.d_unexpl: set[str] = set()
        self.d_export: set[str] = set()
        self.d_bulk: set[str] = set()
        self.d_after = 0
        self.d_bg = 0
        self.d_failed = 0
        self.d_new_address = False
        self.d_events: list[str] = []
        self.d_hits: dict[str, dict[str, None]] = {}

    def features(self) -> list[float]:
        return [len(self.d_patients), len(self.d_new), len(self.d_unexpl), len(self.d_export), len(self.d_bulk),
                self.d_after, self.d_bg, self.d_failed]


def _usual_hour(hours: Sequence[int], total: int, h: int) -> bool:
    """An hour is usual when it (with half its neighbours) holds at least 2 % of the user's events."""
    w = hours[h] + 0.5 * (hours[(h - 1) % 24] + hours[(h + 1) % 24])
    return w >= 0.02 * total


def _poor_reason(reason: str | None, previous: Iterable[str]) -> str | None:
    """Why a break-glass reason is poor: too short to justify anything, or the same words as before."""
    text = " ".join((reason or "").lower().split())
    if len(text) < 15 or len(text.split()) < 3:
        return f"reason too short ({text!r})" if text else "no reason given"
    if sum(1 for r in previous if r == text) >= 2:
        return "the same reason as the user's earlier break-glass grants"
    return None


class Detector:
    """Streaming scorer of access events; :meth:`fit` on a baseline first, then :meth:`observe` each event."""

    def __init__(self, context: Context, alert_budget_per_1000_user_days: float = 1.0) -> None:
        self.context = context
        self.budget = alert_budget_per_1000_user_days
        self.explainer = ex.Explainer(context)
        self.relations = sig.Relations(context)
        self.threshold = float("inf")
        self.calibration: dict[str, float] = {}
        self._peer = {u: (i.role, i.department) for u, i in context.users.items()}
        self._users: dict[str, _User] = {}
        self._stats = _Stats({}, {}, [_robust([])] * _N)
        self._peer_hours: dict[tuple[str, str], list[int]] = {}
        self._open: dict[tuple[str, str], Alert] = {}
        self._raised: list[Alert] = []
        self._accesses = 0
        self._explained = 0
        self._fitting = False
        self._candidates: dict[tuple[str, date], float] = {}
        self._na_days: set[tuple[str, date]] = set()
        self._quiet_key: tuple[float, object, object] = (math.nan, None, None)  # what the limits were computed from
        self._quiet: dict[str, list[float]] = {}
        self._alert_patients: dict[tuple[str, str], tuple[tuple[str, ...], set[str]]] = {}  # open alerts' as sets

    # -- training ----------------------------------------------------------------------------------------------

    def fit(self, baseline: Iterable[AccessEvent]) -> None:
        """Learn colleagues, hours, addresses and daily behaviour from the baseline; calibrate the threshold."""
        events = sorted(baseline, key=lambda e: e.time)
        patients_of: dict[str, set[str]] = {}
        hours_by_parity: dict[str, list[list[int]]] = {}
        for e in events:
            user, t = e.user, e.time
            # get() before creating: setdefault() would build the empty set and histograms for every event.
            if e.action in ACCESS_ACTIONS:
                pids = patients_of.get(user)
                if pids is None:
                    pids = patients_of[user] = set()
                pids.update(e.patients)
            hp = hours_by_parity.get(user)
            if hp is None:
                hp = hours_by_parity[user] = [[0] * 24, [0] * 24]
            hp[t.toordinal() % 2][t.hour] += 1
        self.explainer.learn_colleagues(patients_of)
        self.explainer.learn_consults((e.user, pid, e.time) for e in events if e.action in ACCESS_ACTIONS for pid in e.patients)
        for user, (even, odd) in hours_by_parity.items():
            ph = self._peer_hours.setdefault(self._peer.get(user, ("", "")), [0] * 24)
            for h in range(24):
                ph[h] += even[h] + odd[h]

        # Replay: features of every user-day, hours judged out of sample (the other parity's histogram, whose
        # total is taken once: the replay does not count hours).
        self._fitting = True
        days: dict[tuple[str, date], list[float]] = {}
        first_day = events[0].time.date() if events else None
        other_parity = {u: ((odd, sum(odd)), (even, sum(even))) for u, (even, odd) in hours_by_parity.items()}
        # A user-day's features are its counts after its last event: taken when the user's next day begins (or at the
        # end) rather than after every event. The key is inserted at the day's first event, as before (same order).
        pending: dict[str, tuple[_User, date]] = {}
        for e in events:
            user = e.user
            t = e.time
            day = t.date()
            open_day = pending.get(user)
            if open_day is None or open_day[1] != day:
                if open_day is not None:
                    days[(user, open_day[1])] = open_day[0].features()
                st = self._user(user)
                pending[user] = (st, day)
                days[(user, day)] = []  # filled when the day is over
            else:
                st = open_day[0]
            st.hours, st.hours_total = other_parity[user][t.toordinal() % 2]
            self._step(e, st)
        for user, (st, day) in pending.items():
            days[(user, day)] = st.features()
        self._fitting = False

        rows = [(u, self._peer.get(u, ("", "")), x, d) for (u, d), x in days.items()]
        halves = [_fit_stats([(u, p, x) for u, p, x, d in rows if d.toordinal() % 2 == k], 3) for k in (0, 1)]
        scores: list[float] = []
        for u, p, x, d in rows:
            if first_day is not None and (d - first_day).days < WARM_UP_DAYS:
                continue
            z = _z(halves[1 - d.toordinal() % 2], u, p, x)
            learned, _ = _learned_score(z, (u, d) in self._na_days)
            scores.append(max(learned, self._candidates.get((u, d), 0.0)))
        self._stats = _fit_stats([(u, p, x) for u, p, x, _ in rows], 5)
        for user, (even, odd) in hours_by_parity.items():
            st = self._user(user)
            st.hours = [a + b for a, b in zip(even, odd, strict=True)]
            st.hours_total = sum(st.hours)
            st._reset(None)
        # Aim at a share of the budget: with ~3,000 baseline user-days the budget allows ~3 alerts, and a period's
        # count of such rare days fluctuates by about its square root; aiming at the full budget exceeds it half the time.
        allowed = int(CALIBRATION_MARGIN * self.budget * len(scores) / 1000.0)
        ranked = sorted(scores, reverse=True)
        cut = ranked[allowed] if allowed < len(ranked) else 0.0
        self.threshold = max(MIN_THRESHOLD, cut + 1e-6)
        self.calibration = {"user_days": float(len(scores)), "allowed_alerts": float(allowed), "threshold": self.threshold,
                            "baseline_user_days_over_threshold": float(sum(1 for s in scores if s >= self.threshold))}
        self._candidates.clear()
        self._open.clear()
        self._raised.clear()
        self._accesses = self._explained = 0

    def replace_context(self, context: Context) -> None:
        """Score from now on against a newer context (a feed's update, an import): the tables derived from it (orders,
        departments, names, peer groups) are rebuilt; what was learned (colleagues, consult pairs, explained accesses,
        hours, daily models, the threshold) is kept, so nothing is re-learned."""
        self.context = context
        self.explainer = self.explainer.with_context(context)
        self.relations = sig.Relations(context)
        self._peer = {u: (i.role, i.department) for u, i in context.users.items()}

    def carry_open_alerts(self, previous: Detector) -> None:
        """Take over ``previous``'s open alert windows (after re-learning): a session that goes on joins its alert."""
        self._open.update(previous._open)

    # -- scoring -----------------------------------------------------------------------------------------------

    def _user(self, user: str) -> _User:
        st = self._users.get(user)
        if st is None:
            st = self._users[user] = _User()
        return st

    def observe(self, event: AccessEvent) -> list[Alert]:
        """Score one event as it happens; the alerts raised by it (an event joining an open alert raises none)."""
        return self._step(event, self._user(event.user))

    def _step(self, e: AccessEvent, st: _User) -> list[Alert]:
        # Runs once per event in fit and in observe: attributes used more than once are read into locals once.
        t = e.time
        user = e.user
        day = t.date()
        hits: list[tuple[str, str | None, str]] = []  # (signature, patient, words)
        if st.day != day:
            st._reset(day)
        last = st.last
        if last is not None and t - last >= DORMANT_AFTER:
            hits.append((DORMANT, None, f"first activity after {(t - last).days} days without any"))
        st.last = t
        if e.event_id:
            st.d_events.append(e.event_id)
        address = e.address
        if address and address not in st.addresses:
            if st.addresses:
                st.d_new_address = True
                if self._fitting:
                    self._na_days.add((user, day))
            st.addresses.add(address)
        workstation = e.workstation
        if workstation and workstation not in st.workstations:
            st.workstations.add(workstation)
        hours, total = st.hours, st.hours_total
        if total < 50:
            hours = self._peer_hours.get(self._peer.get(user, ("", "")), hours)
            total = sum(hours)
        hour = t.hour
        if total and not _usual_hour(hours, total, hour):
            st.d_after += 1
        if not self._fitting:
            st.hours[hour] += 1
            st.hours_total += 1

        action = e.action
        if action == "login-failed":
            st.d_failed += 1
        elif action in ACCESS_ACTIONS and e.patients:
            self._accesses += 1
            all_explained = True
            explainer = self.explainer
            d_patients, seen = st.d_patients, st.seen
            for pid in e.patients:
                d_patients.add(pid)
                if pid not in seen:
                    st.d_new.add(pid)
                    seen.add(pid)
                if action == "export":
                    st.d_export.add(pid)
                elif action in ("retrieve", "query"):
                    st.d_bulk.add(pid)
                path = explainer.explain(user, pid, t)
                if path is not None:
                    explainer.record(user, pid, t)
                    # An explained access can still be a self-access; the other signatures need a missing explanation.
                    if self.relations.is_self(user, pid):
                        hits.append((sig.SELF, pid, f"the user accessed their own record (explained by {path})"))
                    continue
                found = self.relations.of(user, pid)
                all_explained = False
                st.d_unexpl.add(pid)
                active = self.explainer.has_encounter(pid, t)
                for s in found:
                    hits.append((s, pid, _SIGNATURE_WORDS[s] if active else _SIGNATURE_WORDS[s] + NO_ENCOUNTER_WORDS))
                if not active:
                    st.slow.append((t, pid, e.event_id))
            if all_explained:
                self._explained += 1
            if action == "break-glass":
                st.d_bg += 1
                poor = _poor_reason(e.reason, st.reasons)
                st.reasons.append(" ".join((e.reason or "").lower().split()))
                if poor:
                    # Abuse spreads over days: count poorly justified grants over the session gap, not per day.
                    st.poor_bg.append((t, e.patients[0]))
                    while t - st.poor_bg[0][0] > SESSION_GAP[BREAK_GLASS_REASON]:
                        st.poor_bg.popleft()
                    hits.append((BREAK_GLASS_REASON, e.patients[0], poor))
        while st.slow and t - st.slow[0][0] > SLOW_WINDOW:
            st.slow.popleft()
        if len(st.slow) >= 2 and hits == [] and e.action in ACCESS_ACTIONS and st.slow[-1][0] == t:
            hits.append((SLOW, st.slow[-1][1], "unexplained access to a patient with no recent order anywhere"))
        if self._fitting and not hits:
            return []  # what _score returns while fitting when nothing hit
        return self._score(e, st, day, hits)

    def _score(self, e: AccessEvent, st: _User, day: date, hits: list[tuple[str, str | None, str]]) -> list[Alert]:
        raised: list[Alert] = []
        for name, pid, words in hits:
            seen = st.d_hits.setdefault(name, {})
            if pid is not None:
                seen[pid] = None
            n = len(st.slow) if name == SLOW else len(st.poor_bg) if name == BREAK_GLASS_REASON else max(1, len(seen))
            score = SIGNATURE_WEIGHT[name] * (1.0 + 0.5 * (n - 1)) if name != SLOW else SIGNATURE_WEIGHT[SLOW] * n
            if words.endswith(NO_ENCOUNTER_WORDS):
                score *= NO_ENCOUNTER_FACTOR
            if self._fitting:
                key = (e.user, day)
                self._candidates[key] = max(self._candidates.get(key, 0.0), score)
                continue
            if score >= self.threshold or name == sig.SELF:
                patients = tuple(seen) if name != SLOW else tuple(dict.fromkeys(p for _, p, _ in st.slow))

                def details(name: str = name, words: str = words, n: int = len(patients)) -> tuple[str, list[str]]:
                    evidence = [f"signature: {words}", f"missing explanation: {self.explainer.why_not(e.user)}"]
                    if name == SLOW:
                        evidence += [f"event {i}" for _, _, i in st.slow if i]
                    return _explain_signature(name, e.user, n, words), evidence

                a = self._raise(e, name, score, patients, details)
                if a is not None:
                    raised.append(a)
        if self._fitting:
            return raised
        x = st.features()
        if not st.d_new_address and all(map(operator.lt, x, self._quiet_limits(e.user))):
            return raised  # no feature is high enough to reach the threshold: what scoring would conclude, cheaply
        z = _z(self._stats, e.user, self._peer.get(e.user, ("", "")), x)
        score, arg = _learned_score(z, st.d_new_address)
        if score >= self.threshold:
            # Volume features move together with the specific ones: name the specific act (export, retrieve).
            if arg in (_PATIENTS, _NEW) and max(z[_EXPORT], z[_BULK]) >= 0.8 * z[arg]:
                arg = _EXPORT if z[_EXPORT] >= z[_BULK] else _BULK
            kind = FEATURE_KIND[FEATURES[arg]]
            if st.d_new_address and (z[_AFTER] > 1.0 or z[_PATIENTS] > 1.0 or z[_BULK] > 1.0):
                kind = COMPROMISED

            def details() -> tuple[str, list[str]]:
                stood_out = [f"{FEATURE_WORDS[f]}: {x[i]:g} today (robust z {z[i]:.1f} against own history and peers)"
                             for i, f in enumerate(FEATURES) if z[i] >= 2.0]
                if st.d_new_address:
                    stood_out.append("worked from an address never seen for this user")
                return _explain_learned(kind, e.user, stood_out), stood_out + [f"event {i}" for i in st.d_events[-MAX_EVIDENCE:]]

            # Sorted: these are sets, whose order follows the per-process string hash; an alert (and which patients
            # it keeps past its cap) must not differ between two runs over the same trail.
            chosen = (st.d_export or st.d_bulk or st.d_unexpl or st.d_patients) if kind != "unusual-hours" else st.d_patients
            a = self._raise(e, kind, score, chosen, details, sort=True)
            if a is not None:
                raised.append(a)
        return raised

    def _quiet_limits(self, user: str) -> list[float]:
        """Per feature, a daily count that keeps the user's learned score under the threshold while every feature
        stays below its limit (and no new address adds points).

        The score is the top z-score plus half the second, so at most 1.5 times the top one: with every z below
        ``threshold / 1.5`` no alert is possible. A feature's z is below ``c`` exactly when its count is below
        ``median + c * scale`` of the user's own statistics or of the peer group's (it is the smaller of the two).
        Each limit is lowered by a relative millionth, far more than the rounding of the z-scores, so a count
        under its limit never belongs to a day that would have alerted. Computed once per user and fit.
        """
        key = self._quiet_key
        if key[0] != self.threshold or key[1] is not self._stats or key[2] is not self._peer:
            self._quiet_key, self._quiet = (self.threshold, self._stats, self._peer), {}
        limits = self._quiet.get(user)
        if limits is None:
            c = self.threshold / 1.5
            if not math.isfinite(c) or c <= 0:
                limits = [math.inf if c > 0 else -math.inf] * _N  # no alert possible at all / every day scored
            else:
                peer = self._stats.peer.get(self._peer.get(user, ("", "")), self._stats.overall)
                own = self._stats.user.get(user)
                limits = [max(_below(pm + c * ps), _below(um + c * us) if own is not None else -math.inf)
                          for (pm, ps), (um, us) in zip(peer, own if own is not None else peer, strict=True)]
            self._quiet[user] = limits
        return limits

    def _raise(self, e: AccessEvent, kind: str, score: float, patients: Collection[str],
               details: Callable[[], tuple[str, list[str]]], *, sort: bool = False) -> Alert | None:
        """Raise an alert of ``kind`` for the event, or extend the user's open one of that kind (None then).

        ``patients`` are the hit's, in order (sorted first when ``sort``: then they are a set); ``details`` gives
        (explanation, evidence) and is only called when they are used: a long alert (an exfiltration day) is
        extended by every event, and once its patients and evidence are at their caps only its end moves.
        """
        key = (e.user, kind)
        a = self._open.get(key)
        ratio = score / self.threshold if math.isfinite(self.threshold) else 1.0
        severity = "low" if ratio < 1.25 else "medium" if ratio < 2 else "high" if ratio < 4 else "critical"
        if kind in (sig.SELF, sig.FAMILY, sig.VIP, sig.COWORKER, sig.NEIGHBOUR) and severity == "low":
            severity = "medium"
        if a is not None and e.time - a.end <= SESSION_GAP.get(kind, DEFAULT_GAP):
            a.end = e.time
            if len(a.patients) < MAX_ALERT_PATIENTS:
                # The alert's patients, then the hit's that are new, in the hit's order: what merging both lists
                # keeping first occurrences gives, with only the new ones sorted.
                known = self._alert_patients.get(key)
                if known is None or known[0] is not a.patients:
                    known = (a.patients, set(a.patients))
                fresh = sorted(patients - known[1]) if sort else [p for p in patients if p not in known[1]]  # type: ignore[operator]
                if fresh:
                    a.patients = (a.patients + tuple(fresh))[:MAX_ALERT_PATIENTS]
                    known[1].update(fresh)
                self._alert_patients[key] = (a.patients, known[1])
            raise_score = score > a.score
            if raise_score or len(a.evidence) < 4 * MAX_EVIDENCE:
                explanation, evidence = details()
                if raise_score:
                    a.score, a.severity, a.explanation = score, severity, explanation
                if e.event_id:
                    evidence.append(f"event {e.event_id}")
                if len(a.evidence) < 4 * MAX_EVIDENCE:
                    have = set(a.evidence)
                    for item in evidence:
                        if len(a.evidence) >= 4 * MAX_EVIDENCE:
                            break
                        if item not in have:
                            have.add(item)
                            a.evidence.append(item)
            return None
        explanation, evidence = details()
        if e.event_id:
            evidence.append(f"event {e.event_id}")
        listed = tuple(sorted(patients)) if sort else tuple(patients)
        a = Alert(e.user, e.time, e.time, kind, severity, listed[:MAX_ALERT_PATIENTS], explanation, list(dict.fromkeys(evidence)), score)
        self._open[key] = a
        self._alert_patients.pop(key, None)
        self._raised.append(a)
        return a

    def flush(self) -> list[Alert]:
        """Close every open alert window; returns the alerts of windows that were still open (already raised)."""
        still_open = list(self._open.values())
        self._open.clear()
        return still_open

    def explained_share(self) -> float:
        """Share of observed access events (with at least one patient) whose every patient access is explained."""
        return self._explained / self._accesses if self._accesses else 1.0

    @property
    def alerts(self) -> list[Alert]:
        """Every alert raised since :meth:`fit`, in the order raised (merged hits included)."""
        return list(self._raised)


_SIGNATURE_WORDS: Final = {
    sig.SELF: "the user accessed their own record",
    sig.FAMILY: "the patient lives at the user's home address or shares the user's surname and street",
    sig.NEIGHBOUR: "the patient lives in the user's street",
    sig.COWORKER: "the patient has the name of a member of staff",
    sig.VIP: "the patient is flagged VIP",
}


def _explain_signature(kind: str, user: str, n: int, words: str) -> str:
    if kind == BREAK_GLASS_REASON:
        return f"{user} used break-glass {n} time(s) with a poor justification: {words}."
    if kind == DORMANT:
        return f"The account {user} was used again after a long silence: {words}. Confirm its holder is still entitled."
    if kind == SLOW:
        return (f"{user} opened {n} records of patients who had no order anywhere in the hospital recently and whom "
                "no clinical path links to the user, a few at a time: a pattern of quiet browsing.")
    return (f"{user} opened {n} record(s) with no clinical reason on file where {words}. "
            "Nothing in the orders links the user to the patient.")


def _explain_learned(kind: str, user: str, stood_out: list[str]) -> str:
    lead = {
        "bulk-export": f"{user} exported far more patients than they or their peers usually do",
        "bulk-retrieve": f"{user} retrieved or queried far more patients than they or their peers usually do",
        "volume": f"{user} accessed far more patients than they or their peers usually do",
        "snooping": f"{user} accessed many patients without a clinical reason on file",
        "unusual-hours": f"{user} worked at hours they never work",
        "break-glass-abuse": f"{user} used break-glass far more often than usual",
        "failed-logins": f"{user}'s account had many failed logins",
        COMPROMISED: f"{user}'s account was used from a new address, in a way unlike its holder (possibly stolen credentials)",
    }.get(kind, f"{user} behaved unusually")
    return lead + ": " + "; ".join(stood_out) + "."
