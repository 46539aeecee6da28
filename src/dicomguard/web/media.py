"""Media types: parsing ``Content-Type``/``Accept`` (RFC 9110 section 8.3 and 12.5.1) and writing multipart/related.

DICOMweb negotiates representations with media ranges whose ``type`` and
``transfer-syntax`` parameters matter (PS3.18 section 8.7.3, 8.7.5). The
archive never transcodes (what it delivers is bit-identical to what it
verified), so negotiation only *selects* among the representations an
object already has; anything else is a 406.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from pydicom.uid import UID

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
OCTET_STREAM = "application/octet-stream"
MULTIPART_RELATED = "multipart/related"

# PS3.18 Table 8.7.3-5 (media types of frames and bulk data by transfer syntax).
_NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}
_COMPRESSED_MEDIA = {
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
}


def frame_media_type(transfer_syntax: str) -> str | None:
    """Media type of the frames of an object in ``transfer_syntax``; None if frames cannot be served (video)."""
    if transfer_syntax in _NATIVE:
        return OCTET_STREAM
    if transfer_syntax in _COMPRESSED_MEDIA:
        return _COMPRESSED_MEDIA[transfer_syntax]
    return None


def is_encapsulated(transfer_syntax: str) -> bool:
    return transfer_syntax not in _NATIVE and UID(transfer_syntax).is_encapsulated


@dataclass(frozen=True)
class MediaRange:
    type: str  # lower-case "type/subtype", may hold "*"
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    def matches(self, media_type: str) -> bool:
        return _type_matches(self.type, media_type)


def _type_matches(pattern: str, media_type: str) -> bool:
    if pattern in ("*", "*/*"):
        return True
    major, _, minor = pattern.partition("/")
    mt_major, _, mt_minor = media_type.partition("/")
    return major == mt_major and (minor == "*" or minor == mt_minor)


def _split_params(text: str) -> list[str]:
    """Split on ';' outside double quotes."""
    out, cur, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == ";" and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def parse_media_type(text: str) -> MediaRange:
    """``type/subtype; a=b; c="d"`` -> MediaRange (names lower-cased, quotes removed)."""
    first, *rest = _split_params(text)
    params: dict[str, str] = {}
    q = 1.0
    for item in rest:
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        if not sep or not name:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if name == "q":
            try:
                q = min(max(float(value), 0.0), 1.0)
            except ValueError:
                q = 0.0
            continue
        params[name] = value
    return MediaRange(first.strip().lower(), params, q)


def _split_list(text: str) -> list[str]:
    """Split an Accept header on ',' outside double quotes."""
    out, cur, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [p for p in (s.strip() for s in out) if p]


def parse_accept(header: str | None) -> list[MediaRange]:
    """Media ranges of an Accept header, best first (stable for equal q); absent header = ``*/*``."""
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges = [parse_media_type(p) for p in _split_list(header)[:64]]
    ranges = [r for r in ranges if r.q > 0]
    return sorted(ranges, key=lambda r: -r.q)


@dataclass(frozen=True)
class Offer:
    """A representation the server can produce: ``media_type`` of each part, in ``transfer_syntax``."""

    media_type: str
    transfer_syntax: str | None = None


def choose_multipart(accept: list[MediaRange], offers: list[Offer], *, single_part_ok: bool = False) -> tuple[Offer, bool] | None:
    """Pick an offer for a multipart/related response (PS3.18 8.7.3.3.2); returns (offer, as_single_part).

    ``multipart/related; type=T; transfer-syntax=TS`` matches when T covers the
    offer's media type and TS is absent, ``*`` or the offer's syntax (an absent
    TS selects what is stored: the archive does not transcode). A bare media
    type matches only when ``single_part_ok`` (one instance: PS3.18 8.7.3.5).
    """
    for r in accept:
        for offer in offers:
            if r.type in ("*/*", "multipart/*"):
                return offer, False
            if r.type == MULTIPART_RELATED:
                wanted = r.params.get("type", "*/*").lower()
                ts = r.params.get("transfer-syntax")
                if _type_matches(wanted, offer.media_type) and (ts in (None, "*") or ts == offer.transfer_syntax):
                    return offer, False
            elif single_part_ok and r.matches(offer.media_type):
                ts = r.params.get("transfer-syntax")
                if ts in (None, "*") or ts == offer.transfer_syntax:
                    return offer, True
    return None


def choose_single(accept: list[MediaRange], offered: list[str]) -> str | None:
    """Pick a plain (non-multipart) media type, e.g. for rendered images or DICOM JSON."""
    for r in accept:
        for media_type in offered:
            if r.matches(media_type):
                return media_type
    return None


def part_content_type(offer: Offer) -> str:
    if offer.transfer_syntax:
        return f"{offer.media_type}; transfer-syntax={offer.transfer_syntax}"
    return offer.media_type


class MultipartWriter:
    """Writes a multipart/related body part by part (RFC 2387, RFC 2046 section 5.1.1)."""

    def __init__(self, root_type: str) -> None:
        # 32 hex characters: cannot collide with DICOM content by chance (2^-128).
        self.boundary = secrets.token_hex(16)
        self.root_type = root_type
        self._first = True

    @property
    def content_type(self) -> str:
        return f'multipart/related; type="{self.root_type}"; boundary={self.boundary}'

    def part_header(self, content_type: str, extra: Iterable[tuple[str, str]] = ()) -> bytes:
        lead = b"" if self._first else b"\r\n"
        self._first = False
        lines = [f"--{self.boundary}", f"Content-Type: {content_type}", *(f"{k}: {v}" for k, v in extra)]
        return lead + ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")

    def closing(self) -> bytes:
        return f"\r\n--{self.boundary}--\r\n".encode("ascii")

    def parts(self, items: Iterable[tuple[str, bytes]]) -> Iterator[bytes]:
        """Yield the whole body for (content type, payload) items."""
        for content_type, payload in items:
            yield self.part_header(content_type)
            yield payload
        yield self.closing()
