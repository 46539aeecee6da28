"""Path parameters of DICOMweb URLs: only syntactically valid UIDs reach a handler (PS3.5 9.1, PS3.18 8.2).

A UID is digits and dots, at most 64 characters, no leading zeros in a
component (the same rule the ingest validator applies, so every stored UID
passes). Anything else, including ``..``, encoded slashes or odd bytes, is a
400 before any lookup happens (see also :mod:`dicomguard.web.middleware`).
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Path, Request

UID_PATTERN = r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$"

StudyUID = Annotated[str, Path(pattern=UID_PATTERN, max_length=64, description="Study Instance UID")]
SeriesUID = Annotated[str, Path(pattern=UID_PATTERN, max_length=64, description="Series Instance UID")]
InstanceUID = Annotated[str, Path(pattern=UID_PATTERN, max_length=64, description="SOP Instance UID")]

DICOMWEB_PREFIX = "/dicomweb"
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.-]{1,253})(:[0-9]{1,5})?$")


def dicomweb_base(request: Request) -> str:
    """Absolute URL of the DICOMweb root, for RetrieveURL and BulkDataURI values (PS3.18 8.2).

    The host comes from the Host header only if it is a syntactically valid
    host (else the local address is used), so no header content is reflected
    verbatim into URLs. A Host without a port (dicomweb-client sends one) gets
    the port this connection really reached. The scheme is always https.
    """
    local_host, local_port = request.scope.get("server") or ("localhost", 443)
    m = _HOST.match(request.headers.get("host", ""))
    if m:
        host, port = m.group(1), (m.group(2) or f":{local_port}")[1:]
    else:
        host, port = (f"[{local_host}]" if ":" in str(local_host) else str(local_host)), str(local_port)
    authority = host if port == "443" else f"{host}:{port}"
    return f"https://{authority}{request.scope.get('root_path', '')}{DICOMWEB_PREFIX}"
