"""Misuse signatures: who the patient is to the user (self, household, neighbour, co-worker) and VIP status.

Curious snooping targets people the user knows: themself, relatives, neighbours,
colleagues and celebrities (Asamoah et al., "Detecting inappropriate access to
electronic health records", 2012; Boxwala et al., JAMIA 18(5), 2011, whose
features include same last name, same address and VIP status). These relations are
computed from the context's names and addresses only; they are evidence, not proof:
the detector raises them only for accesses no clinical path explains (self-access
excepted), and a privacy officer decides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from dicomguard.detect.context import Context, PatientInfo

SELF: Final = "self-access"
FAMILY: Final = "family"
NEIGHBOUR: Final = "neighbour"
COWORKER: Final = "co-worker"
VIP: Final = "vip"

_PUNCT: Final = re.compile(r"[^\w]+")


def name_parts(name: str) -> tuple[str, str]:
    """(family, first given) of a DICOM PN ``Family^Given``, ``Family, Given`` or ``Given Family`` name, lower case."""
    n = name.strip().lower()
    if "^" in n:
        family, _, rest = n.partition("^")
        given = rest.replace("^", " ").split()
    elif "," in n:
        family, _, rest = n.partition(",")
        given = rest.split()
    else:
        tokens = n.split()
        if not tokens:
            return "", ""
        family, given = tokens[-1], tokens[:-1]
    return family.strip(), given[0] if given else ""


def address_key(address: str) -> str:
    """Case, punctuation and spacing removed: "12 Elm St., Springfield" and "12 elm st springfield" are one address."""
    return " ".join(_PUNCT.sub(" ", address.lower()).split())


def street_key(address: str) -> str:
    """The address without its house number (the first token holding a digit): the street of a neighbour."""
    tokens = address_key(address).split()
    for i, t in enumerate(tokens):
        if any(c.isdigit() for c in t):
            return " ".join(tokens[:i] + tokens[i + 1:])
    return " ".join(tokens)


@dataclass(frozen=True, slots=True)
class _Person:
    family: str
    given: str
    address: str
    street: str


def _person(name: str, address: str) -> _Person:
    family, given = name_parts(name)
    return _Person(family, given, address_key(address), street_key(address))


class Relations:
    """Signatures of one (user, patient) pair, from precomputed name and address keys."""

    def __init__(self, context: Context) -> None:
        self._users = {u: _person(info.name, info.home_address) for u, info in context.users.items()}
        self._users_by_name: dict[tuple[str, str], set[str]] = {}
        for u, p in self._users.items():
            if p.family:
                self._users_by_name.setdefault((p.family, p.given), set()).add(u)
        self._context = context
        self._patients: dict[str, tuple[_Person, bool] | None] = {}

    def _patient(self, patient_id: str) -> tuple[_Person, bool] | None:
        try:
            return self._patients[patient_id]
        except KeyError:
            info: PatientInfo | None = self._context.patients.get(patient_id)
            value = (_person(info.name, info.address), info.vip) if info is not None else None
            self._patients[patient_id] = value
            return value

    def is_self(self, user: str, patient_id: str) -> bool:
        """Whether the patient is the user (same name, and the same address where both are known)."""
        # Asked for every explained access: the cheap comparisons come first, and the family name decides most pairs.
        patients = self._patients
        pat = patients[patient_id] if patient_id in patients else self._patient(patient_id)
        u = self._users.get(user)
        if pat is None or u is None:
            return False
        p = pat[0]
        if not p.family or u.family != p.family or u.given != p.given:
            return False
        return not p.address or not u.address or p.address == u.address

    def of(self, user: str, patient_id: str) -> list[str]:
        """The signatures the pair shows, strongest first (empty for most pairs)."""
        pat = self._patient(patient_id)
        if pat is None:
            return []
        p, vip = pat
        out: list[str] = []
        u = self._users.get(user)
        if u is not None and p.family:
            if self.is_self(user, patient_id):
                out.append(SELF)
            elif u.address and p.address == u.address:
                out.append(FAMILY)  # one household
            elif u.street and p.street == u.street:
                out.append(FAMILY if p.family == u.family else NEIGHBOUR)
        if p.family and SELF not in out:
            others = self._users_by_name.get((p.family, p.given))
            if others and (len(others) > 1 or user not in others):
                out.append(COWORKER)
        if vip:
            out.append(VIP)
        return out
