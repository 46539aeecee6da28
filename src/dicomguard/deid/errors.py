"""The one error of de-identification: the object cannot be made safe, so it is not released.

De-identification fails closed (PS3.15 E.1: an application that cannot apply the
profile must not claim it did): anything the engine cannot clean — an attribute
it cannot parse, a pixel encoding it cannot decode and re-encode, burned-in text
still readable after cleaning — raises :class:`DeidRefused` instead of returning
a partly cleaned object. The reason never contains the identifying value itself.
"""

from __future__ import annotations

from dicomguard.errors import DicomGuardError


class DeidRefused(DicomGuardError):
    """The object was refused by de-identification; nothing of it may be released.

    ``reason`` is a short text without PHI; ``frame`` is the 0-based frame index
    when the refusal concerns one frame of the pixel data.
    """

    def __init__(self, reason: str, frame: int | None = None) -> None:
        super().__init__(reason if frame is None else f"{reason} (frame {frame})")
        self.reason = reason
        self.frame = frame
