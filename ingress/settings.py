"""Ingress settings (environment variables SWITCHBOARD_<NAME>)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from switchboard.settings import ServiceSettings


class IngressSettings(ServiceSettings):
    host: str = Field("127.0.0.1", description="address the HTTP/websocket server binds")
    port: int = Field(8080, description="HTTP/websocket port")
    public_url: str = Field("", description="public base URL (https://host) of this ingress: TwiML stream URLs and "
                            "the URLs Twilio signs; unset: the request's own URL, trusted only once its Twilio "
                            "signature checks")
    ingress_node_index: int = Field(
        0, ge=0, description="this node's index; it owns audio.out partitions p % count == index"
    )
    ingress_node_count: int = Field(1, ge=1, description="number of ingress nodes sharing audio.out")
    reuse_port: bool = Field(
        False, description="bind SWITCHBOARD_PORT with SO_REUSEPORT, so several ingress processes on one host share "
        "it and the kernel spreads new connections among them; each process is its own node (its own "
        "SWITCHBOARD_INGRESS_NODE_INDEX and SWITCHBOARD_METRICS_PORT). `switchboard up --scale ingress=N` sets all "
        "three"
    )
    agent_id: str = Field("clinic-receptionist", description="agent persona answering calls")
    language: str = Field("en-US", description="default call language")
    max_calls: int = Field(200, ge=1, description="admission limit: concurrent calls on this node")
    max_message_bytes: int = Field(65_536, description="largest websocket message accepted")
    playout_lead_ms: int = Field(
        100, ge=0, description="how far ahead of real time agent audio is written to the socket"
    )
    # -- faults the caller hears: a late reply, a lost end of reply (ingress/filler.py, README) --
    filler_after_ms: int = Field(
        1500, ge=0, description="a caller who spoke and has heard no agent audio this long after their last loud "
        "frame hears the call's filler phrase (\"One moment, please.\", sent by TTS at call start), once per turn, "
        "then the reply; 0: never"
    )
    filler_min_speech_ms: int = Field(
        300, ge=20, description="loud caller audio (heard while no agent audio plays) that makes a turn worth a filler"
    )
    filler_speech_dbfs: float = Field(
        -40.0, le=0, description="caller audio louder than this (RMS dBFS of a message) counts as speech for the "
        "filler cue; a line noisier than this gets no filler"
    )
    playback_end_grace_ms: int = Field(
        1000, ge=0, description="a reply whose audio has played out and whose end (END record) has not come this "
        "long after is finished anyway, so the caller's next words are a new turn, not a barge-in"
    )
    # -- caller voice over a reply (ingress/heard.py; README "Interruptions") --
    barge_in_pause_grace_ms: int = Field(
        3000, ge=100, le=30_000,
        description="a reply paused by caller voice plays on by itself from where it stopped if neither "
        "a resume nor a clear comes this long after the pause (a lost command never leaves the caller in silence)"
    )
    barge_in_end_guard_ms: int = Field(
        500, ge=0, le=5000,
        description="a reply whose end has arrived and has less than this left to play is not paused by "
        "caller voice (a backchannel as the agent finishes); a real interruption still clears it"
    )
    # -- a silent caller (ingress/silence.py; README "Silence and the keypad") --
    silence_prompt_s: float = Field(
        8.0, ge=0, description="a caller silent this long after the agent's reply finished playing on the phone "
        "(caller speech or a key press restarts the count) is asked \"Are you still there?\", once; 0: never"
    )
    silence_hangup_s: float = Field(
        30.0, ge=0, description="a caller silent this long after the same reply's end is told goodbye and the "
        "call ends (reason silence); 0: never"
    )
    silence_answer_s: float = Field(
        15.0, ge=0, description="after the caller spoke or pressed a key, their answer is awaited this long before the "
        "silence counts again: a slow answer is not preceded by \"Are you still there?\", a cough still is, later"
    )
    drain_timeout_s: float = Field(
        25.0, description="on SIGTERM, how long to wait for calls to end before closing them"
    )
    # -- caller audio to the bus (ingress/calls.py, ingress/sendpath.py; README "How a call flows") --
    audio_record_ms: int = Field(
        60, ge=20, le=200, multiple_of=20, description="caller audio per audio.in record, a multiple of 20 ms: "
        "longer records cost the ingress, broker and turns less CPU per call-second, and delay the end of a turn "
        "by up to this much minus 20 ms"
    )
    audio_send_backlog_ms: int = Field(
        5000, ge=100, description="caller audio of one call that may wait for the Kafka producer (the socket's "
        "read never waits on it; 160 KB per call at 5 s): a broker stall up to this long loses nothing, beyond it "
        "the audio is dropped and counted in switchboard_audio_send_dropped_seconds_total"
    )
    producer_batch_bytes: int = Field(
        262_144, ge=16_384, description="largest producer batch per partition: while the broker answers one "
        "request, a partition's records gather in its batch, and a full batch would make the send wait"
    )
    producer_linger_ms: int = Field(
        5, ge=0, le=50, description="how long the caller-audio producer lets a batch wait for more records before "
        "sending it (aiokafka linger_ms): fewer, larger produce requests, each record up to this much later; at 100 "
        "silent callers 5 ms cut the audio.in hop p95 from 195-224 ms to a median of 74 ms and the broker's CPU by a "
        "tenth"
    )
    # -- authentication (ingress/auth.py, docs/security.md); `switchboard up` generates these when unset --
    auth: Literal["on", "off"] = Field("on", description="off turns every authentication check off (a loud warning "
                                       "at start-up): only for a closed test network")
    twilio_auth_token: SecretStr = Field(SecretStr(""), description="Twilio account auth token: checks "
                                         "X-Twilio-Signature on /twilio/voice and /twilio/media (unset: refused)")
    api_keys: SecretStr = Field(SecretStr(""), description="API keys for POST /api/v1/calls/start, comma-separated, or "
                                "the path of a file with one a line; KEY:engines may choose engines per call")
    token_secret: SecretStr = Field(SecretStr(""), description="HMAC key of the short-lived stream and session tokens; "
                                    "every ingress node must share it (unset: random per process, one node only)")
    token_ttl_s: float = Field(120.0, gt=0, description="lifetime of a Twilio stream token or a JSON API session "
                               "token (and of a session nobody joined)")
    metrics_token: SecretStr = Field(SecretStr(""), description="bearer token for /metrics and nothing else on the "
                                     "public port (unset: refused there; scrape SWITCHBOARD_METRICS_PORT instead)")
    acs_audience: str = Field("", description="ACS resource's immutable ID: the audience of the JWT on /acs/media "
                              "(unset: ACS refused)")
    acs_issuer: str = Field("https://acscallautomation.communication.azure.com", description="issuer of the ACS JWT")
    acs_jwks: str = Field("", description="keys of the ACS JWT: an https:// JWKS URL (fetched and cached) or the path "
                          "of a JWKS file")
    max_pending_sessions: int = Field(1000, ge=1, description="JSON API sessions started but not yet joined, at most "
                                      "(more are refused with 503 until some are joined or expire)")
    # -- limits on what a caller (or a stranger) can make this node do; see README "Bad input" --
    trusted_proxies: str = Field(
        "", description="comma-separated proxy addresses/CIDRs whose X-Forwarded-For is believed (empty: the "
        "client address is the TCP peer, and X-Forwarded-For is ignored)"
    )
    source_limit_exempt: str = Field(
        "", description="comma-separated addresses/CIDRs exempt from the per-source limits (e.g. Twilio's or ACS's "
        "media servers, which carry many calls each)"
    )
    call_starts_per_source_per_minute: int = Field(
        60, ge=1, description="new calls (websocket connections and POST /api/v1/calls/start) one source may make per "
        "minute; more are refused (1013 / 429)"
    )
    max_calls_per_source: int = Field(
        20, ge=1, description="open call websockets one source may hold at once; more are refused (1013)"
    )
    max_audio_speed: float = Field(
        1.5, ge=1.0, description="caller audio accepted per call, as a multiple of the call's age (time since its "
        "socket opened); the excess is dropped and counted"
    )
    audio_burst_s: float = Field(
        5.0, ge=0.1, description="caller audio a call may send ahead of that pace (the budget counts from the call's "
        "start, so audio that piled up while this node stalled is never dropped)"
    )
    max_dtmf_digits: int = Field(4, ge=1, description="DTMF digits taken from one message; the rest are dropped")
    max_dtmf_per_s: float = Field(10.0, gt=0, description="DTMF digits taken per second of a call")
    max_end_speech_per_s: float = Field(
        1.0, gt=0, description="JSON API end_speech messages taken per second of a call; the rest are dropped"
    )
    max_body_bytes: int = Field(16_384, ge=1024, description="largest HTTP request body accepted (413 beyond)")
    media_timeout_s: float = Field(
        10.0, gt=0, description="a call socket with no caller audio (nor agent audio playing) for this long, from the "
        "connect or since the last, is closed with 1008 and its slot freed"
    )
    # -- the caller's number on the bus (switchboard/redact.py, docs/analytics.md) --
    caller_number_mode: Literal["masked", "hashed", "clear"] = Field(
        "masked", description="what call events publish of the caller's number: masked (last four digits), hashed "
        "(nothing) or clear; each adds attributes.caller_hash, a keyed hash for counting repeat callers"
    )
    caller_hash_key: SecretStr = Field(
        SecretStr(""), description="HMAC key of attributes.caller_hash; every ingress node must share it (unset: "
        "random per process, so repeat callers are not recognised across restarts)"
    )

    @model_validator(mode="after")
    def _node_in_range(self) -> IngressSettings:
        # a node past the count would own no reply partition and could answer no call
        if self.ingress_node_index >= self.ingress_node_count:
            raise ValueError(f"SWITCHBOARD_INGRESS_NODE_INDEX ({self.ingress_node_index}) must be below "
                             f"SWITCHBOARD_INGRESS_NODE_COUNT ({self.ingress_node_count})")
        return self
