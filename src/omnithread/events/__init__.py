"""The event schema and its validation: pure, importing no other stage."""

from omnithread.events.schema import (
    BIOMETRIC_KEYS,
    CALLS,
    CHANNELS,
    COMMON_FIELDS,
    CONSENT_PURPOSES,
    ENTRY_METHODS,
    EVENT_SCHEMAS,
    IDENTIFIER_KEYS,
    MAX_BATCH_BYTES,
    MAX_EVENT_BYTES,
    EventSchema,
    FieldSpec,
)
from omnithread.events.validate import CheckedEvent, TimePolicy, parse_timestamp, validate_event

__all__ = [
    "BIOMETRIC_KEYS",
    "CALLS",
    "CHANNELS",
    "COMMON_FIELDS",
    "CONSENT_PURPOSES",
    "ENTRY_METHODS",
    "EVENT_SCHEMAS",
    "IDENTIFIER_KEYS",
    "MAX_BATCH_BYTES",
    "MAX_EVENT_BYTES",
    "CheckedEvent",
    "EventSchema",
    "FieldSpec",
    "TimePolicy",
    "parse_timestamp",
    "validate_event",
]
