"""Access-anomaly detection for the archive's audit trail (insider snooping, exfiltration, stolen credentials).

A pure control: it reads PS3.15 A.5 audit messages and three context CSV files and
returns alerts; it imports nothing of the archive (no storage, no keys, no
network), so it can score an exported trail offline as well as run inside the
recorder. Patient IDs stay in memory.
"""

from dicomguard.detect.context import (
    Context,
    ContextError,
    Order,
    PatientInfo,
    UserInfo,
    load_context_dir,
    load_orders_csv,
    load_patients_csv,
    load_users_csv,
)
from dicomguard.detect.detector import Alert, Detector
from dicomguard.detect.events import AccessEvent, parse_audit_line, read_audit_files
from dicomguard.detect.offline import detect_offline

__all__ = [
    "AccessEvent", "Alert", "Context", "ContextError", "Detector", "Order", "PatientInfo", "UserInfo",
    "detect_offline", "load_context_dir", "load_orders_csv", "load_patients_csv", "load_users_csv",
    "parse_audit_line", "read_audit_files",
]
