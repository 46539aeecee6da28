"""A simulated hospital imaging archive: staff, patients, orders, weeks of normal work and injected misuse.

Used by the tests and by ``bench/detect.py``. Everything is drawn from one seeded
RNG, so a seed is a reproducible hospital. The normal work has the noise real
trails have (unrecorded consults, covering colleagues, new workstations, night
shifts, overtime, referral exports, justified break-glass, returns from leave);
misuse comes in the kinds of :data:`MISUSE_KINDS`, each injected into the
scoring period with its ground truth (user, start, end).
"""

from __future__ import annotations

import csv
import random
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dicomguard.detect.context import Context, Order, PatientInfo, UserInfo
from dicomguard.detect.events import AccessEvent

MISUSE_KINDS = (
    "snoop-vip", "snoop-coworker", "snoop-family", "snoop-neighbour", "self-access", "slow-and-low",
    "bulk-exfiltration", "compromised-credentials", "break-glass-abuse", "departing-employee", "dormant-account",
)
SECTIONS = {"rad-neuro": ("MR", "CT"), "rad-body": ("CT", "US"), "rad-msk": ("MR", "DX"), "rad-cardiac": ("CT", "US")}
CLINICAL = {"cardiology": "rad-cardiac", "oncology": "rad-body", "emergency": None, "orthopedics": "rad-msk",
            "internal-medicine": "rad-body", "neurology": "rad-neuro"}
CONSULTS = {"cardiology": "internal-medicine", "internal-medicine": "cardiology", "neurology": "emergency",
            "emergency": "neurology", "oncology": "internal-medicine", "orthopedics": "emergency"}
GOOD_REASONS = (
    "unconscious patient brought in by ambulance, prior imaging needed for trauma assessment",
    "cardiac arrest in the waiting area, checking previous echo and CT before intervention",
    "patient transferred from another hospital without records, stroke protocol started",
    "suspected pulmonary embolism at night, comparing with the last CT angiography",
    "multi-trauma after road accident, need prior spine imaging before surgery",
    "anaphylaxis during contrast injection, checking earlier reactions and studies",
    "child with head injury, parents report previous scans here, neurosurgery on call asking",
)
_SYL = ("an", "ber", "car", "dal", "el", "fen", "gar", "hol", "ing", "jor", "kel", "lin", "mor", "nel", "ost", "par",
        "quin", "ros", "sel", "tor", "ul", "ven", "wal", "yor", "zan", "bro", "cha", "dre", "fli", "gri")
_GIVEN = ("anna", "ben", "carla", "david", "eva", "felix", "greta", "hugo", "ida", "jonas", "karin", "lars", "mia",
          "nils", "olga", "paul", "rita", "sven", "tina", "uwe", "vera", "willem", "xenia", "yusuf", "zoe", "omar",
          "lea", "tom", "sara", "ali", "nina", "erik", "maria", "leon", "julia", "max")
_STREET = ("street", "road", "lane", "avenue", "way", "close", "park", "hill")


@dataclass
class Misuse:
    kind: str
    user: str
    start: datetime
    end: datetime
    events: int = 0


@dataclass
class Simulation:
    context: Context
    baseline: list[AccessEvent]
    scoring: list[AccessEvent]
    baseline_until: datetime
    misuse: list[Misuse]
    misuse_event_ids: set[str] = field(default_factory=set)

    @property
    def events(self) -> list[AccessEvent]:
        return self.baseline + self.scoring


class _Sim:
    def __init__(self, seed: int, n_users: int, n_patients: int, baseline_days: int, scoring_days: int,
                 per_kind: int) -> None:
        self.r = random.Random(seed)
        self.start = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
        self.days = baseline_days + scoring_days
        self.baseline_until = self.start + timedelta(days=baseline_days)
        self.per_kind = per_kind
        self.events: list[AccessEvent] = []
        self.n = 0
        self.misuse: list[Misuse] = []
        self.misuse_ids: set[str] = set()
        self._surnames = sorted({a + b + c for a in _SYL for b in _SYL for c in ("", "s", "er", "man")})
        self._streets = [f"{self.r.choice(_SYL).title()}{self.r.choice(_SYL)} {self.r.choice(_STREET)}" for _ in range(2500)]
        self._make_users(n_users)
        self._make_patients(n_patients)
        self._make_orders()

    # -- people --------------------------------------------------------------------------------------------

    def _name(self) -> tuple[str, str]:
        return self.r.choice(self._surnames).title(), self.r.choice(_GIVEN).title()

    def _address(self) -> str:
        return f"{self.r.randint(1, 199)} {self.r.choice(self._streets)}, Springfield"

    def _make_users(self, n: int) -> None:
        r = self.r
        plan: list[tuple[str, str, int]] = []
        scale = n / 160
        for sec in SECTIONS:
            plan += [("radiologist", sec, max(2, round(7 * scale))), ("technologist", sec, max(2, round(6 * scale)))]
        for dept in CLINICAL:
            role = "cardiologist" if dept == "cardiology" else "physician"
            plan += [(role, dept, max(2, round(8 * scale))), ("nurse", dept, max(1, round(5 * scale))),
                     ("clerk", dept, max(1, round(3 * scale)))]
        plan.append(("admin", "records", max(2, round(4 * scale))))
        self.users: dict[str, UserInfo] = {}
        self.subnet: dict[str, str] = {}
        self.night: set[str] = set()
        i = 0
        for role, dept, count in plan:
            for _ in range(count):
                i += 1
                uid = f"u{i:04d}"
                fam, giv = self._name()
                self.users[uid] = UserInfo(uid, f"{fam}^{giv}", role, dept, self._address())
                self.subnet[uid] = f"10.{list(SECTIONS).index(dept) + 1 if dept in SECTIONS else 20 + list(CLINICAL).index(dept) if dept in CLINICAL else 40}.{r.randint(0, 255)}"
                if role in ("technologist", "nurse", "physician") and r.random() < 0.12:
                    self.night.add(uid)
        self.by_dept: dict[str, list[str]] = {}
        self.by_role_dept: dict[tuple[str, str], list[str]] = {}
        for u, info in self.users.items():
            self.by_dept.setdefault(info.department, []).append(u)
            self.by_role_dept.setdefault((info.role, info.department), []).append(u)
        self.workstations = {u: {f"{self.subnet[u]}.{r.randint(2, 250)}"} for u in self.users}

    def _make_patients(self, n: int) -> None:
        r = self.r
        self.patients: dict[str, PatientInfo] = {}
        for i in range(n):
            fam, giv = self._name()
            pid = f"P{i:06d}"
            self.patients[pid] = PatientInfo(pid, f"{fam}^{giv}", self._address(), r.random() < 0.005)
        ids = list(self.patients)
        self.active = ids[: int(n * 0.6)]  # patients with encounters during the period
        self.inactive = ids[int(n * 0.6):]
        # Staff who are patients here, their households and neighbours (the targets of curious snooping).
        self.self_patient: dict[str, str] = {}
        self.family: dict[str, str] = {}
        self.neighbour: dict[str, str] = {}
        k = 0
        for u, info in self.users.items():
            fam, _, giv = info.name.partition("^")
            if r.random() < 0.35:
                k += 1
                pid = f"S{k:06d}"
                self.patients[pid] = PatientInfo(pid, info.name, info.home_address, False)
                self.self_patient[u] = pid
            if r.random() < 0.5:
                k += 1
                pid = f"S{k:06d}"
                self.patients[pid] = PatientInfo(pid, f"{fam}^{r.choice(_GIVEN).title()}", info.home_address, False)
                self.family[u] = pid
            if r.random() < 0.5:
                k += 1
                pid = f"S{k:06d}"
                number, _, street = info.home_address.partition(" ")
                other = self._name()[0]
                self.patients[pid] = PatientInfo(pid, f"{other}^{r.choice(_GIVEN).title()}",
                                                 f"{int(number) % 199 + 1} {street}", False)
                self.neighbour[u] = pid
        self.vips = [p for p, info in self.patients.items() if info.vip]
        self.panel = {d: self.active[i::len(CLINICAL)] for i, d in enumerate(CLINICAL)}

    def _make_orders(self) -> None:
        r = self.r
        self.orders: list[Order] = []
        self.orders_by_day: dict[int, list[Order]] = {}
        n = 0
        for day in range(-30, self.days):
            weekend = (self.start + timedelta(days=day)).weekday() >= 5
            for dept, section in CLINICAL.items():
                doctors = self.by_role_dept.get(("cardiologist" if dept == "cardiology" else "physician", dept), [])
                for doc in doctors:
                    for _ in range(r.randint(0, 1) if weekend and dept != "emergency" else r.randint(1, 4)):
                        n += 1
                        pid = r.choice(self.panel[dept]) if dept != "emergency" else r.choice(self.active)
                        sec = section or r.choice(list(SECTIONS))
                        at = self.start + timedelta(days=day, hours=r.uniform(7, 17) if doc not in self.night else r.uniform(19, 30))
                        o = Order(f"A{n:07d}", pid, f"1.2.826.0.1.3680043.10.{n}", r.choice(SECTIONS[sec]), doc, dept, at, sec)
                        self.orders.append(o)
                        self.orders_by_day.setdefault(day, []).append(o)

    # -- events ----------------------------------------------------------------------------------------------

    def _ev(self, t: datetime, user: str, action: str, patients: tuple[str, ...], *, study: str = "", instances: int = 0,
            address: str | None = None, outcome: int = 0, reason: str | None = None, misuse: Misuse | None = None) -> None:
        self.n += 1
        ws = address or self._ws(user)
        eid = f"sim-{self.n}"
        self.events.append(AccessEvent(t, user, action, patients, (study,) if study else (), instances, ws, None,
                                       outcome, reason, eid))
        if misuse is not None:
            misuse.events += 1
            self.misuse_ids.add(eid)

    def _ws(self, user: str) -> str:
        return self.r.choice(sorted(self.workstations[user]))

    def _shift(self, user: str, t: datetime) -> datetime:
        """Move a time into the user's shift (night workers work 19-07)."""
        day = t.replace(hour=0, minute=0, second=0, microsecond=0)
        if user in self.night:
            return day + timedelta(hours=19 + self.r.uniform(0, 11))
        if self.r.random() < 0.04:
            return day + timedelta(hours=self.r.uniform(17, 21))  # overtime
        return day + timedelta(hours=self.r.uniform(7, 17.5))

    def normal(self) -> None:
        r = self.r
        for day in range(self.days):
            d0 = self.start + timedelta(days=day)
            weekend = d0.weekday() >= 5
            active_users = [u for u in self.users if r.random() < (0.3 if weekend else 0.92)]
            for u in active_users:
                if r.random() < 0.03:  # a new workstation or a laptop moved to another port
                    self.workstations[u].add(f"{self.subnet[u]}.{r.randint(2, 250)}")
                t = self._shift(u, d0)
                if r.random() < 0.02:
                    self._ev(t - timedelta(minutes=1), u, "login-failed", (), outcome=4)
                self._ev(t, u, "login", ())
            on = set(active_users)
            for o in self.orders_by_day.get(day, []):
                self._order_work(o, on)
            # Radiologists also read older orders (worklists lag), and compare priors.
            for o in self.orders_by_day.get(day - r.randint(1, 3), [])[::3]:
                rads = [u for u in self.by_role_dept.get(("radiologist", o.reading_group), []) if u in on]
                if rads:
                    u = r.choice(rads)
                    self._ev(self._shift(u, d0), u, "view", (o.patient_id,), study=o.study_uid)
            # Records office: referral exports of recently ordered patients.
            for u in self.by_role_dept.get(("admin", "records"), []):
                if u in on:
                    recent = self.orders_by_day.get(day - r.randint(0, 10), [])
                    for o in r.sample(recent, min(len(recent), r.randint(3, 12))):
                        self._ev(self._shift(u, d0), u, "export", (o.patient_id,), study=o.study_uid, instances=r.randint(20, 400))
            # Emergency physicians' justified break-glass (a fresh emergency order exists, or an ordered patient).
            for u in self.by_role_dept.get(("physician", "emergency"), []):
                if u in on and r.random() < 0.15:
                    o = r.choice(self.orders_by_day.get(day, []) or self.orders)
                    t = self._shift(u, d0)
                    reason = r.choice(GOOD_REASONS) + f", bed {r.randint(1, 30)}"
                    self._ev(t, u, "break-glass", (o.patient_id,), reason=reason)
                    self._ev(t + timedelta(minutes=2), u, "view", (o.patient_id,))
            # Noise: covering for an absent colleague, misfiled requests (unexplained, but not misuse).
            for u in active_users:
                if r.random() < 0.04:
                    self._ev(self._shift(u, d0), u, "view", (r.choice(self.active),))

    def _order_work(self, o: Order, on: set[str]) -> None:
        r = self.r
        t = o.ordered_at
        doc = o.ordering_user
        self._ev(t, doc, "query", (o.patient_id,))
        self._ev(t + timedelta(days=r.uniform(0.3, 2)), doc, "view", (o.patient_id,), study=o.study_uid)
        if r.random() < 0.08:
            self._ev(t + timedelta(days=r.uniform(1, 3)), doc, "export", (o.patient_id,), study=o.study_uid, instances=r.randint(50, 500))
        techs = [u for u in self.by_role_dept.get(("technologist", o.reading_group), []) if u in on] or self.by_role_dept.get(("technologist", o.reading_group), [])
        if techs:
            u = r.choice(techs)
            self._ev(t + timedelta(hours=r.uniform(0.5, 6)), u, "retrieve", (o.patient_id,), study=o.study_uid, instances=r.randint(50, 600))
        rads = self.by_role_dept.get(("radiologist", o.reading_group), [])
        if rads:
            u = r.choice(rads)
            tt = t + timedelta(hours=r.uniform(2, 30))
            self._ev(tt, u, "retrieve", (o.patient_id,), study=o.study_uid, instances=r.randint(50, 600))
            self._ev(tt + timedelta(minutes=r.uniform(1, 20)), u, "view", (o.patient_id,), study=o.study_uid)
        for role in ("nurse", "clerk"):
            staff = [u for u in self.by_role_dept.get((role, o.department), []) if u in on]
            if staff and r.random() < 0.6:
                u = r.choice(staff)
                self._ev(t + timedelta(hours=r.uniform(0, 36)), u, "view" if role == "nurse" else "query", (o.patient_id,))
        if r.random() < 0.05:  # unrecorded consult by the usual consulting department
            peers = self.by_role_dept.get(("cardiologist" if CONSULTS[o.department] == "cardiology" else "physician", CONSULTS[o.department]), [])
            if peers:
                u = peers[zlib.crc32(o.patient_id.encode()) % min(3, len(peers))]  # a few consult-prone physicians (stable across runs)
                self._ev(t + timedelta(hours=r.uniform(2, 48)), u, "view", (o.patient_id,))

    # -- misuse --------------------------------------------------------------------------------------------------

    def inject(self) -> None:
        r = self.r
        candidates = [u for u, i in self.users.items() if i.role != "admin"]
        r.shuffle(candidates)
        used: set[str] = set()
        span = (self.days - (self.baseline_until - self.start).days)
        t0 = self.baseline_until

        def pick(ok=lambda u: True) -> str | None:
            for u in candidates:
                if u not in used and ok(u):
                    used.add(u)
                    return u
            return None

        def when(u: str, day: int) -> datetime:
            return self._shift(u, t0 + timedelta(days=day))

        for kind in MISUSE_KINDS:
            for _ in range(self.per_kind):
                day = r.randint(1, max(1, span - 2))
                if kind in ("snoop-vip", "snoop-coworker", "snoop-family", "snoop-neighbour", "self-access"):
                    if kind == "snoop-vip":
                        u = pick()
                        targets = r.sample(self.vips, min(len(self.vips), r.randint(1, 2)))
                    else:
                        table = {"snoop-coworker": None, "snoop-family": self.family, "snoop-neighbour": self.neighbour,
                                 "self-access": self.self_patient}[kind]
                        if table is None:
                            u = pick()
                            others = [p for v, p in self.self_patient.items() if v != u]
                            targets = r.sample(others, min(len(others), r.randint(1, 2)))
                        else:
                            u = pick(lambda v, t=table: v in t)
                            targets = [table[u]] if u else []
                    if not u or not targets:
                        continue
                    m = Misuse(kind, u, when(u, day), when(u, day))
                    t = m.start
                    for p in targets:
                        self._ev(t, u, "query", (p,), misuse=m)
                        self._ev(t + timedelta(minutes=1), u, "view", (p,), misuse=m)
                        t += timedelta(minutes=r.uniform(2, 30))
                    m.end = t
                elif kind == "slow-and-low":
                    u = pick()
                    if not u:
                        continue
                    m = Misuse(kind, u, when(u, 0), when(u, 0))
                    d = r.randint(0, 2)
                    while d < span:
                        t = when(u, d)
                        self._ev(t, u, "view", (r.choice(self.inactive),), misuse=m)
                        m.end = t
                        d += r.randint(2, 4)
                elif kind in ("bulk-exfiltration", "departing-employee"):
                    u = pick(lambda v: self.users[v].role in ("physician", "cardiologist", "clerk", "nurse"))
                    if not u:
                        continue
                    dept = self.users[u].department
                    pool = (list(self.patients) if kind == "bulk-exfiltration"
                            else [o.patient_id for d in range(max(0, span + (t0 - self.start).days - 30), self.days)
                                  for o in self.orders_by_day.get(d, []) if o.department == dept])
                    pool = list(dict.fromkeys(pool))
                    n = r.randint(150, 500) if kind == "bulk-exfiltration" else r.randint(60, 200)
                    targets = r.sample(pool, min(n, len(pool)))
                    day = span - 1 if kind == "departing-employee" else day
                    t = t0 + timedelta(days=day, hours=r.uniform(17, 20))
                    m = Misuse(kind, u, t, t)
                    action = r.choice(("export", "retrieve")) if kind == "bulk-exfiltration" else "export"
                    for p in targets:
                        self._ev(t, u, action, (p,), instances=r.randint(20, 300), misuse=m)
                        t += timedelta(seconds=r.uniform(5, 40))
                    m.end = t
                elif kind == "compromised-credentials":
                    u = pick()
                    if not u:
                        continue
                    ip = f"203.0.{r.randint(0, 255)}.{r.randint(1, 254)}"
                    t = t0 + timedelta(days=day, hours=r.uniform(1, 4))
                    m = Misuse(kind, u, t, t)
                    self._ev(t, u, "login-failed", (), address=ip, outcome=4, misuse=m)
                    self._ev(t + timedelta(seconds=30), u, "login", (), address=ip, misuse=m)
                    for p in r.sample(list(self.patients), r.randint(25, 80)):
                        t += timedelta(seconds=r.uniform(10, 90))
                        self._ev(t, u, r.choice(("query", "retrieve")), (p,), address=ip, misuse=m)
                    m.end = t
                elif kind == "break-glass-abuse":
                    u = pick(lambda v: self.users[v].role in ("physician", "nurse", "cardiologist"))
                    if not u:
                        continue
                    m = Misuse(kind, u, when(u, day), when(u, day))
                    d = day
                    reason = r.choice(("urgent", "emergency", "needed", "pt care"))
                    for _ in range(r.randint(3, 5)):
                        t = when(u, min(d, span - 1))
                        p = r.choice(list(self.patients))
                        self._ev(t, u, "break-glass", (p,), reason=reason, misuse=m)
                        self._ev(t + timedelta(minutes=1), u, "view", (p,), misuse=m)
                        m.end = t
                        d += r.randint(0, 2)
                elif kind == "dormant-account":
                    u = pick(lambda v: self.users[v].role != "radiologist")
                    if not u:
                        continue
                    # The holder left after the first days of the baseline; the account is used again now.
                    cutoff = self.start + timedelta(days=3)
                    self.events = [e for e in self.events if e.user != u or e.time < cutoff]
                    t = t0 + timedelta(days=day, hours=r.uniform(8, 22))
                    m = Misuse(kind, u, t, t)
                    self._ev(t, u, "login", (), misuse=m)
                    for p in r.sample(self.active, r.randint(3, 10)):
                        t += timedelta(minutes=r.uniform(1, 10))
                        self._ev(t, u, "view", (p,), misuse=m)
                    m.end = t
                else:  # pragma: no cover
                    raise AssertionError(kind)
                self.misuse.append(m)


def simulate(seed: int = 1, *, n_users: int = 160, n_patients: int = 4000, baseline_days: int = 28,
             scoring_days: int = 14, per_kind: int = 2) -> Simulation:
    """A hospital: context, baseline events, scoring events (normal work plus misuse) and the ground truth."""
    s = _Sim(seed, n_users, n_patients, baseline_days, scoring_days, per_kind)
    s.normal()
    s.inject()
    events = sorted(s.events, key=lambda e: e.time)
    end = s.start + timedelta(days=s.days)
    events = [e for e in events if e.time < end]
    split = next((i for i, e in enumerate(events) if e.time >= s.baseline_until), len(events))
    ctx = Context(s.users, s.patients, s.orders)
    return Simulation(ctx, events[:split], events[split:], s.baseline_until, s.misuse, s.misuse_ids)


# -- writers: PS3.15 XML lines and the three CSV files -------------------------------------------------------


def write_context(context: Context, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "users.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(("user_id", "name", "role", "department", "home_address"))
        w.writerows((u.user_id, u.name, u.role, u.department, u.home_address) for u in context.users.values())
    with open(folder / "patients.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(("patient_id", "name", "address", "vip"))
        w.writerows((p.patient_id, p.name, p.address, "true" if p.vip else "false") for p in context.patients.values())
    with open(folder / "orders.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(("accession", "patient_id", "study_uid", "modality", "ordering_user", "department", "ordered_at",
                    "reading_group"))
        w.writerows((o.accession, o.patient_id, o.study_uid, o.modality, o.ordering_user, o.department,
                     o.ordered_at.isoformat(), o.reading_group) for o in context.orders)


def audit_xml(e: AccessEvent) -> bytes:
    """The AuditMessage dicomguard writes for the event (built with dicomguard.audit.message, PS3.15 A.5.3)."""
    from dicomguard.audit.codes import (
        ActionCode,
        EventIds,
        EventTypes,
        ObjectIdTypes,
        ObjectRole,
        ObjectType,
        Roles,
    )
    from dicomguard.audit.message import (
        AuditMessage,
        ObjectDescription,
        Participant,
        ParticipantObject,
        SopClassRef,
    )

    archive = Participant("DICOMGUARD", False, (), "AETITLES=DICOMGUARD", "dicomguard", "archive.local", 1)
    user = Participant(e.user, True, (), e.workstation, e.user, e.address, 2 if e.address else None)
    objects = [ParticipantObject(s, ObjectIdTypes.STUDY_INSTANCE_UID, type_code=ObjectType.SYSTEM_OBJECT, role=ObjectRole.REPORT,
                                 descriptions=(ObjectDescription(sop_classes=(SopClassRef("1.2.840.10008.5.1.4.1.1.2", e.instances),)),)
                                 if e.instances else ())
               for s in e.study_uids]
    objects += [ParticipantObject(p, ObjectIdTypes.PATIENT_NUMBER, name=p, type_code=ObjectType.PERSON, role=ObjectRole.PATIENT)
                for p in e.patients]
    types: tuple = ()
    description = None
    action = ActionCode.READ
    if e.action == "view":
        event_id = EventIds.INSTANCES_ACCESSED
    elif e.action == "retrieve":
        event_id = EventIds.INSTANCES_TRANSFERRED
    elif e.action == "export":
        event_id = EventIds.EXPORT
    elif e.action == "query":
        event_id, action = EventIds.QUERY, ActionCode.EXECUTE
    elif e.action in ("login", "login-failed"):
        event_id, action = EventIds.USER_AUTHENTICATION, ActionCode.EXECUTE
        types = (EventTypes.LOGIN,) if e.action == "login" else (EventTypes.LOGIN, EventTypes.LOGIN_FAILED)
    elif e.action == "break-glass":
        event_id, action = EventIds.SECURITY_ALERT, ActionCode.EXECUTE
        types = (EventTypes.EMERGENCY_OVERRIDE_STARTED, EventTypes.BREAK_THE_GLASS)
        until = (e.time + timedelta(hours=4)).isoformat()
        description = f"break-glass until {until}: {e.reason or ''}"
        objects.append(ParticipantObject("urn:dicomguard:break-glass:1", ObjectIdTypes.URI, type_code=ObjectType.SYSTEM_OBJECT,
                                         role=ObjectRole.SECURITY_RESOURCE,
                                         details=(("Alert Description", (e.reason or "").encode()),)))
    else:
        raise ValueError(e.action)
    del Roles
    return _to_xml(AuditMessage(event_id, e.time, e.outcome, (user, archive), "dicomguard@archive", action, types,
                                description, None, (), tuple(objects)))


def _to_xml(message):
    from dicomguard.audit.message import to_xml

    return to_xml(message)


def write_audit(events: list[AccessEvent], path: Path, *, syslog_every: int = 0) -> None:
    """One message per line; every ``syslog_every``-th line wrapped in an RFC 5424 message (0: none)."""
    from dicomguard.audit.syslog import format_message

    with open(path, "wb") as f:
        for i, e in enumerate(events):
            xml = audit_xml(e)
            if syslog_every and i % syslog_every == 0:
                xml = format_message(xml, time=e.time, hostname="archive", procid="1", outcome=e.outcome, seq=i + 1)
            f.write(xml + b"\n")
