"""Access-anomaly detection in the archive: imported context, alerts, graded containment, scoring inside ``serve``."""
