"""Library settings the archive relies on, applied once by the composition root (never at import time).

* pydicom's value validation would warn with the offending element values, i.e.
  PHI, in the logs: validation warnings are off and pydicom's ``UserWarning``s
  are ignored (values are validated by the ingest pipeline itself).
* pynetdicom logs request and response identifiers (patient names and IDs of
  C-FIND/C-MOVE queries) at INFO; both are off, and its logger stays at WARNING.
"""

from __future__ import annotations

import logging
import warnings


def configure_libraries() -> None:
    """Apply the settings above (idempotent and cheap: called by every ``Archive.open`` and ``init``)."""
    import pydicom.config

    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom(\..*)?$")
    from pynetdicom import _config

    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
