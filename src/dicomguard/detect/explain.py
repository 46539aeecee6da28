"""Explanation engine: is there a legitimate path from the user to the patient?

Explanation-based auditing (Fabbri and LeFevre, PVLDB 5(1), 2011) observes that
most accesses in a hospital are explained by a short path through its own
records, and that the remainder is where misuse hides. The paths used here:

* ``ordering-user``: the user ordered a study of the patient;
* ``reading-group``: the user's department is a reading group of an order of the
  patient placed within the reading window (radiologists read priors too);
* ``department``: the user's department placed an order for the patient within
  the consult window (ward colleagues, clerks, consultants of that department);
* ``consult``: the user's department regularly consults for the department that
  placed an order for the patient within the consult window: a department pair
  learned from the baseline, where the first department's users opened at least
  :data:`CONSULT_MIN_PATIENTS` patients with an open order of the second and no other
  path (groups learned from the log itself rather than declared, in the spirit of
  Fabbri and LeFevre, "Explaining accesses to electronic medical records using
  diagnosis information", JAMIA 20(1), 2013);
* ``repeat``: the user had an explained access to the patient before;
* ``colleague``: a user who shares many patients with this user (collaborative
  groups, Chen and Malin, "Detection of anomalous insiders in collaborative
  environments via relational analysis of access logs", CODASPY 2011) had an
  explained access to the patient recently.

An access is explained by its first path; an unexplained access is not misuse,
only what is left to score. Only explained accesses feed the ``repeat`` and
``colleague`` paths, so one unexplained access never explains the next.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Final

from dicomguard.detect.context import Context

ORDERING_USER: Final = "ordering-user"
READING_GROUP: Final = "reading-group"
DEPARTMENT: Final = "department"
CONSULT: Final = "consult"
REPEAT: Final = "repeat"
COLLEAGUE: Final = "colleague"
PATHS: Final = (ORDERING_USER, READING_GROUP, DEPARTMENT, CONSULT, REPEAT, COLLEAGUE)

CONSULT_MIN_PATIENTS: Final = 5
"""Distinct baseline patients that make a (consulting, ordering) department pair a learned consult pattern."""

_EARLY: Final = timedelta(days=1)  # accesses a little before the order's time (scheduling, clock skew)


class Explainer:
    def __init__(self, context: Context, *, consult_window: timedelta = timedelta(days=30),
                 reading_window: timedelta = timedelta(days=90), colleague_window: timedelta = timedelta(days=30),
                 encounter_window: timedelta = timedelta(days=90)) -> None:
        self.context = context
        self.consult_window = consult_window
        self.reading_window = reading_window
        self.colleague_window = colleague_window
        self.encounter_window = encounter_window
        self._department = {u: info.department for u, info in context.users.items()}
        self._groups = {id(o): o.reading_groups for o in context.orders}
        self.colleagues: dict[str, frozenset[str]] = {}
        self._explained: dict[str, set[str]] = {}
        self._recent: dict[str, dict[str, datetime]] = {}
        self.consults: frozenset[tuple[str, str]] = frozenset()

    def learn_colleagues(self, patients_of: Mapping[str, set[str]], *, min_shared: int = 3, top: int = 20,
                         max_users_per_patient: int = 60) -> None:
        """Colleagues of each user: the users sharing the most patients with them (at least ``min_shared``).

        Patients seen by very many users (a ward's long-stay patient) link everybody and are left out.
        """
        users_of: dict[str, list[str]] = {}
        for user, pids in patients_of.items():
            for pid in pids:
                users_of.setdefault(pid, []).append(user)
        shared: dict[str, Counter[str]] = {}
        for users in users_of.values():
            if len(users) < 2 or len(users) > max_users_per_patient:
                continue
            for u in users:
                c = shared.get(u)
                if c is None:
                    c = shared[u] = Counter()
                # Count every user of the patient (in C), then take the user back out: the same counts as adding
                # one for each other user, without a Python loop per pair.
                c.update(users)
                c[u] -= 1
        for u, c in shared.items():
            del c[u]  # back to zero above; a user is not their own colleague
        # Ties broken by name, not by set order: the same trail must give the same colleagues in every process.
        self.colleagues = {u: frozenset(v for v, n in sorted(c.items(), key=lambda vn: (-vn[1], vn[0]))[:top] if n >= min_shared)
                           for u, c in shared.items()}

    def learn_consults(self, accesses: Iterable[tuple[str, str, datetime]]) -> None:
        """Learn the department pairs of :data:`CONSULT` from baseline (user, patient, time) accesses in time order.

        Only accesses no order path explains count, each (user department, order department,
        patient) once; a user's own department never pairs with itself (that is ``department``).
        """
        patients: dict[tuple[str, str], set[str]] = {}
        for user, pid, t in accesses:
            department = self._department.get(user, "")
            if not department or self._order_path(user, department, pid, t) is not None:
                continue
            for o in self.context.orders_by_patient.get(pid, ()):
                if o.ordered_at - _EARLY > t:
                    break
                if o.department and o.department != department and t - o.ordered_at <= self.consult_window:
                    patients.setdefault((department, o.department), set()).add(pid)
        self.consults = frozenset(pair for pair, pids in patients.items() if len(pids) >= CONSULT_MIN_PATIENTS)

    def with_context(self, context: Context) -> Explainer:
        """This explainer over a newer context (an HL7 v2 feed's update): the tables derived from the context are
        rebuilt, everything learned (colleagues, consult pairs, explained and recent accesses, windows) carries over."""
        fresh = Explainer(context)
        derived = {"context", "_department", "_groups"}
        for name, value in vars(self).items():
            if name not in derived:
                setattr(fresh, name, value)
        return fresh

    def has_encounter(self, patient_id: str, t: datetime) -> bool:
        """Whether the patient has an order within the encounter window of ``t`` (an active patient)."""
        for o in self.context.orders_by_patient.get(patient_id, ()):
            if abs(t - o.ordered_at) <= self.encounter_window:
                return True
        return False

    def explain(self, user: str, patient_id: str, t: datetime) -> str | None:
        """The first path explaining the access, or ``None``."""
        seen = self._explained.get(user)
        if seen is not None and patient_id in seen:
            return REPEAT
        department = self._department.get(user, "")
        path = self._order_path(user, department, patient_id, t)
        if path is not None:
            return path
        if department and self.consults:
            for o in self.context.orders_by_patient.get(patient_id, ()):
                if o.ordered_at - _EARLY > t:
                    break
                if (department, o.department) in self.consults and t - o.ordered_at <= self.consult_window:
                    return CONSULT
        recent = self._recent.get(patient_id)
        if recent:
            mates = self.colleagues.get(user)
            if mates:
                small, large = (recent, mates) if len(recent) < len(mates) else (mates, recent)
                for v in small:
                    if v in large and v != user and t - recent[v] <= self.colleague_window:
                        return COLLEAGUE
        return None

    def _order_path(self, user: str, department: str, patient_id: str, t: datetime) -> str | None:
        orders = self.context.orders_by_patient.get(patient_id)
        if not orders:
            return None
        groups = self._groups
        for o in orders:
            if o.ordered_at - _EARLY > t:
                break  # sorted by time: the rest are later still
            if o.ordering_user == user:
                return ORDERING_USER
            if not department:
                continue  # the two department paths need one
            age = t - o.ordered_at
            # An order added to the context after this explainer was built has no precomputed groups: derive them.
            # (Not as the default of get(): that would split the order's groups on every call.)
            reading = groups.get(id(o))
            if reading is None:
                reading = o.reading_groups
            if department in reading and age <= self.reading_window:
                return READING_GROUP
            if o.department == department and age <= self.consult_window:
                return DEPARTMENT
        return None

    def record(self, user: str, patient_id: str, t: datetime) -> None:
        """Remember an explained access (for the repeat and colleague paths)."""
        # get() first: setdefault() would build an empty set and dict on every call, and most calls find them.
        seen = self._explained.get(user)
        if seen is None:
            seen = self._explained[user] = set()
        seen.add(patient_id)
        recent = self._recent.get(patient_id)
        if recent is None:
            recent = self._recent[patient_id] = {}
        recent[user] = t

    def why_not(self, user: str) -> str:
        """The missing explanation, in words, for the evidence of an alert."""
        department = self._department.get(user) or "unknown"
        return (f"no order by the user, no order read by or placed from the user's department ({department}) "
                f"in the last {self.consult_window.days} days, no earlier explained access, "
                "no recent access by the user's usual colleagues")
