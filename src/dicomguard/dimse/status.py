"""DIMSE status codes used by the adapter (PS3.7 Annex C; PS3.4 B.2.3, C.4)."""

SUCCESS = 0x0000
PENDING = 0xFF00
CANCEL = 0xFE00
REFUSED_NOT_AUTHORIZED = 0x0124  # PS3.7 C.5.? "Refused: Not Authorized" (general status)
STORE_OUT_OF_RESOURCES = 0xA700  # PS3.4 B.2.3
STORE_DATASET_MISMATCH = 0xA900  # PS3.4 B.2.3, used for write-once conflicts (with ErrorComment)
STORE_CANNOT_UNDERSTAND = 0xC000  # PS3.4 B.2.3
FIND_UNABLE_TO_PROCESS = 0xC000  # PS3.4 C.4.1.1.4
FIND_IDENTIFIER_MISMATCH = 0xA900
FIND_OUT_OF_RESOURCES = 0xA700  # PS3.4 C.4.1.1.4 "Refused: Out of Resources"
RETRIEVE_OUT_OF_RESOURCES = 0xA701  # unable to calculate number of matches
RETRIEVE_MOVE_DESTINATION_UNKNOWN = 0xA801  # PS3.4 C.4.2.1.4
RETRIEVE_UNABLE_TO_PROCESS = 0xC000
RETRIEVE_SUBOPS_FAILED = 0xB000  # warning: sub-operations complete, one or more failures
PROCESSING_FAILURE = 0x0110
