"""The options of the Basic Application Level Confidentiality Profile (PS3.15 E.3).

An empty option set is the basic profile itself (PS3.15 E.2): every attribute of
Table E.1-1 is removed, emptied or replaced, and nothing is retained. Each option
either retains something the basic profile would remove (``retain-*``) or cleans
something it would otherwise remove or leave unexamined (``clean-*``); option names
are the PS3.15 option names in kebab-case so that they can be typed on a command
line and recorded in the output unchanged.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Final


class Option(enum.StrEnum):
    """One option of PS3.15 E.3, by its kebab-case name."""

    RETAIN_SAFE_PRIVATE = "retain-safe-private"
    """E.3.10: keep the private attributes known to be safe (our own short list)."""
    RETAIN_UIDS = "retain-uids"
    """E.3.9: keep the original UIDs instead of replacing them."""
    RETAIN_DEVICE_IDENTITY = "retain-device-identity"
    """E.3.8: keep device serial numbers, station names and similar."""
    RETAIN_INSTITUTION_IDENTITY = "retain-institution-identity"
    """E.3.11: keep institution names, addresses and departments."""
    RETAIN_PATIENT_CHARACTERISTICS = "retain-patient-characteristics"
    """E.3.7: keep age, sex, size, weight and similar."""
    RETAIN_LONGITUDINAL_FULL_DATES = "retain-longitudinal-full-dates"
    """E.3.6: keep every date and time unchanged."""
    RETAIN_LONGITUDINAL_MODIFIED_DATES = "retain-longitudinal-modified-dates"
    """E.3.6: shift every date by a per-patient offset, so that intervals survive."""
    CLEAN_DESCRIPTORS = "clean-descriptors"
    """E.3.5: keep descriptions and comments with identifying values removed from them."""
    CLEAN_STRUCTURED_CONTENT = "clean-structured-content"
    """E.3.4: keep SR content trees without person names and with identifying text removed."""
    CLEAN_GRAPHICS = "clean-graphics"
    """E.3.3: keep graphic annotations with identifying text removed."""
    CLEAN_PIXEL_DATA = "clean-pixel-data"
    """E.3.1: remove burned-in identifying text from the pixel data (done by the pixel cleaner)."""


PRESETS: Final[dict[str, frozenset[Option]]] = {
    "basic": frozenset(),
    "research": frozenset(
        {
            Option.RETAIN_LONGITUDINAL_MODIFIED_DATES,
            Option.RETAIN_PATIENT_CHARACTERISTICS,
            Option.CLEAN_DESCRIPTORS,
            Option.CLEAN_STRUCTURED_CONTENT,
            Option.CLEAN_GRAPHICS,
            Option.CLEAN_PIXEL_DATA,
        }
    ),
}
"""Named option sets. ``research`` keeps what longitudinal image research needs (intervals
between dates, patient size and weight for dose and SUV, cleaned descriptions and reports)
and nothing that names a person, a device or an institution."""

_EXCLUSIVE: Final[tuple[tuple[Option, Option], ...]] = (
    # PS3.15 E.3.6 defines the two as alternatives: dates are either kept or modified.
    (Option.RETAIN_LONGITUDINAL_FULL_DATES, Option.RETAIN_LONGITUDINAL_MODIFIED_DATES),
)


def parse_options(names: Iterable[str], preset: str | None) -> frozenset[Option]:
    """The option set named by ``preset`` (if any) plus the options ``names``.

    Raises :class:`ValueError` naming an unknown preset or option, or two options
    that exclude each other. Names are matched exactly (kebab-case, lower-case):
    a typo must fail loudly rather than silently de-identify with fewer options.
    """
    selected: set[Option] = set()
    if preset is not None:
        if preset not in PRESETS:
            known_presets = ", ".join(sorted(PRESETS))
            raise ValueError(f"unknown de-identification preset {preset!r}; known presets: {known_presets}")
        selected |= PRESETS[preset]
    known = {o.value: o for o in Option}
    for name in names:
        option = known.get(name)
        if option is None:
            raise ValueError(f"unknown de-identification option {name!r}; known options: {', '.join(sorted(known))}")
        selected.add(option)
    for a, b in _EXCLUSIVE:
        if a in selected and b in selected:
            raise ValueError(f"de-identification options {a.value!r} and {b.value!r} exclude each other")
    return frozenset(selected)
