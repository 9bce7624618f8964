"""Ingress settings (environment variables SWITCHBOARD_<NAME>)."""

from __future__ import annotations

from pydantic import Field

from switchboard.settings import ServiceSettings


class IngressSettings(ServiceSettings):
    host: str = Field("127.0.0.1", description="address the HTTP/websocket server binds")
    port: int = Field(8080, description="HTTP/websocket port")
    public_url: str = Field("", description="public base URL for TwiML stream URLs (default: from the request)")
    ingress_node_index: int = Field(
        0, ge=0, description="this node's index; it owns audio.out partitions p % count == index"
    )
    ingress_node_count: int = Field(1, ge=1, description="number of ingress nodes sharing audio.out")
    agent_id: str = Field("clinic-receptionist", description="agent persona answering calls")
    language: str = Field("en-US", description="default call language")
    max_calls: int = Field(200, ge=1, description="admission limit: concurrent calls on this node")
    max_message_bytes: int = Field(65_536, description="largest websocket message accepted")
    playout_lead_ms: int = Field(
        100, ge=0, description="how far ahead of real time agent audio is written to the socket"
    )
    drain_timeout_s: float = Field(
        25.0, description="on SIGTERM, how long to wait for calls to end before closing them"
    )
