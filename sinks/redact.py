"""Moved to ``switchboard.redact`` (the STT processor redacts too, and processors never import
sinks); kept so the sink's modules and older imports keep working."""

from switchboard.redact import (  # noqa: F401 - re-exported
    ALL_KINDS,
    CARD,
    DOB,
    EMAIL,
    PHONE,
    SSN,
    TAGS,
    Redacted,
    RedactingFilter,
    Redactor,
    caller_hash,
    install_log_redaction,
    mask_caller,
)
