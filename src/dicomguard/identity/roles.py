"""The roles an account can hold (the default policies give each its rights; ``policy/defaults``)."""

ROLES = (
    "radiologist",
    "cardiologist",
    "technologist",
    "sonographer",
    "referring_physician",
    "researcher",
    "security_officer",
    "admin",
)
