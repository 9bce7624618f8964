"""Azure Communication Services bidirectional media streaming (``WS /acs/media``)."""
