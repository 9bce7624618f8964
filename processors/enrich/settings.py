from __future__ import annotations

from pydantic import Field

from switchboard.settings import ServiceSettings


class EnrichSettings(ServiceSettings):
    fetch_max_wait_ms: int = Field(250, ge=0, description="consumer fetch wait (enrichment is not on the voice path)")
    late_window_s: float = Field(
        30.0, ge=0, description="after call_ended, records of the call arriving this late still revise its summary"
    )
    max_call_age_s: float = Field(
        4 * 3600.0, gt=0, description="forget a call with no call_ended after this long (bounds memory)"
    )
    summary_max_chars: int = Field(400, ge=80, description="length cap of the summary")
