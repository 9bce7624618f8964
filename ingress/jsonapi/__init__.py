"""The JSON API: ``POST /api/v1/calls/start``, ``WS /ws/call/{session_id}``, ``GET /api/v1/calls/{id}/metrics``."""
