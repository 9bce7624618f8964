"""OpenTelemetry tracing of a turn across the services, chained through the records' ``traceparent`` header.

Each service calls ``setup(name, settings)`` once in ``main()``. With an OTLP endpoint (``SWITCHBOARD_OTLP_ENDPOINT``,
or the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) it installs an SDK tracer
provider (``service.name`` = the service) exporting over OTLP/HTTP from a background thread, flushed at exit.
Without one nothing is installed: ``enabled()`` is false, the runner and the ingress skip every tracing step (one
boolean check per record), and records keep the ``traceparent`` that ``Correlation`` gives them.

A turn's spans, one trace per call (every record of a call descends from its call start):

    ingress  call.start          publishing call_started (the trace's root)
    ingress  caller.audio        the caller's audio published until the agent answers (one span, not one a frame)
    turns    turn                speech onset -> end of turn decided
    stt      stt.early           the turn so far decoded at a pause (beside the chain: a child of caller.audio)
    stt      stt.decode          the turn's transcript
    agent    agent.reply         the reply (greeting or answer, or one made on an early transcript), every sentence
    tts      tts.sentence        synthesis of one sentence
    ingress  egress.first_audio  the reply's first audio arriving at the ingress -> written to the caller's socket

Processors get their span from the shared runner (``switchboard/runner.py``) through the ``Stage``s below, so their
logic stays free of tracing: a span around ``handle()`` of the records a stage starts with, or, for a stage that
spans many records (a turn), a span drawn when the output that ends it is produced, from the times that output
carries. The records produced under a span carry its context, so the next service's span is its child.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from switchboard.records import (
    AgentReply,
    CallEvent,
    CallEventKind,
    ReplyKind,
    SpeechChunk,
    Transcript,
    TranscriptKind,
    TurnEvent,
    TurnEventKind,
)

if TYPE_CHECKING:
    from switchboard.bus import Correlation
    from switchboard.settings import ServiceSettings

logger = logging.getLogger(__name__)

_PROPAGATOR = TraceContextTextMapPropagator()
_tracer: Tracer | None = None  # set by setup() when an endpoint is configured; None: tracing off
_provider: Any = None


# -- set-up -----------------------------------------------------------------------------------------------------------
def endpoint(settings: ServiceSettings, environ: dict[str, str] | None = None) -> str:
    """The OTLP/HTTP traces URL to export to, or "" (tracing off).

    ``SWITCHBOARD_OTLP_ENDPOINT`` first (a base URL, like ``OTEL_EXPORTER_OTLP_ENDPOINT``), then the standard
    variables; ``OTEL_SDK_DISABLED=true`` turns tracing off whatever is set."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ""
    base = (getattr(settings, "otlp_endpoint", "") or "").strip()
    if base:
        return f"{base.rstrip('/')}/v1/traces"
    if traces := env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip():
        return traces  # the standard's signal-specific URL is used as it is
    if base := env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
        return f"{base.rstrip('/')}/v1/traces"
    return ""


def setup(service: str, settings: ServiceSettings, exporter: Any = None) -> bool:
    """Install tracing for this process (once, in ``main()``). Returns whether it is on.

    ``exporter`` replaces the OTLP exporter (tests: an in-memory one)."""
    global _tracer, _provider
    url = endpoint(settings)
    if exporter is None and not url:
        return False
    # imported only when on: a process without an endpoint never loads the SDK
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=url)
    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "service.namespace": "switchboard"}),
        shutdown_on_exit=False,  # our shutdown() flushes at exit, bounded
    )
    # spans leave in batches from a background thread (OTEL_BSP_* tune it); a slow or absent collector
    # costs dropped spans, never a stalled handler
    provider.add_span_processor(BatchSpanProcessor(exporter))
    if _provider is not None:  # set up again (tests): the previous provider flushes and stops
        _provider.shutdown()
    else:  # first set-up of this process: flush at exit
        atexit.register(shutdown)
    _provider, _tracer = provider, provider.get_tracer("switchboard")
    logger.info("tracing on", extra={"fields": {"service": service, "endpoint": url or type(exporter).__name__}})
    return True


def shutdown(timeout_s: float = 3.0) -> None:
    """Flush the spans still queued and stop exporting (at exit; idempotent). Bounded: with the collector down the
    exporter retries for up to its 10 s timeout, which must not hold up a service's exit (the ingress's drain is
    already most of its grace period)."""
    global _tracer, _provider
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        done = threading.Thread(target=provider.shutdown, name="tracing-shutdown", daemon=True)
        done.start()
        done.join(timeout_s)


def flush(timeout_s: float = 5.0) -> bool:
    """Export every span ended so far (tests, benchmarks); True when tracing is off."""
    return _provider is None or _provider.force_flush(int(timeout_s * 1000))


def enabled() -> bool:
    return _tracer is not None


def tracer() -> Tracer:
    """This process's tracer: a no-op one while tracing is off."""
    return _tracer if _tracer is not None else trace.NoOpTracer()


# -- propagation ------------------------------------------------------------------------------------------------------
def parent(traceparent: str) -> otel_context.Context:
    """The context a ``traceparent`` header names (empty, so a new trace, when it is missing or invalid)."""
    return _PROPAGATOR.extract({"traceparent": traceparent}) if traceparent else otel_context.Context()


def traceparent_of(span: Span) -> str:
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, trace.set_span_in_context(span))
    return carrier.get("traceparent", "")


def stamp(corr: Correlation, span: Span | None) -> Correlation:
    """``corr`` carrying ``span``'s context, so what is produced with it continues the trace under that span."""
    if span is None:
        return corr
    tp = traceparent_of(span)
    return replace(corr, traceparent=tp) if tp else corr


def header(headers: Iterable[tuple[str, bytes | None]] | None) -> str:
    """The ``traceparent`` of a consumed record's headers; "" while tracing is off (not even looked for)."""
    if _tracer is None:
        return ""
    for k, v in headers or ():
        if k == "traceparent" and v is not None:
            return v.decode("ascii", "replace")
    return ""


def ids(call_id: str | None, turn_seq: int | None) -> dict[str, Any]:
    """The correlation attributes of a span."""
    out: dict[str, Any] = {}
    if call_id:
        out["call_id"] = call_id
        if turn_seq is not None:
            out["turn_id"] = f"{call_id}:{turn_seq}"
            out["turn_seq"] = turn_seq
    return out


def start(
    name: str, traceparent: str = "", *, start_ns: int | None = None, kind: SpanKind = SpanKind.INTERNAL,
    attributes: dict[str, Any] | None = None,
) -> Span | None:
    """A span under ``traceparent`` (a new trace without one); None while tracing is off. The caller ends it."""
    if _tracer is None:
        return None
    return _tracer.start_span(name, context=parent(traceparent), kind=kind, attributes=attributes,
                              start_time=start_ns)


def end(span: Span | None, end_ns: int | None = None) -> None:
    if span is not None:
        span.end(end_time=end_ns)


# -- the stages of a turn, as the runner sees them ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Stage:
    """One traced stage of a processor.

    ``starts``: the input records whose ``handle()`` is the stage (a span around it). ``ends``: for a stage spanning
    many records, the output record that completes it; ``began_us`` then gives the stage's start from that record,
    and the span is drawn from there to the record's own time. ``attributes`` adds stage-specific attributes from the
    record (input for ``starts``, output for ``ends``). A stage with ``propagate`` false is recorded beside the chain
    (its outputs keep the record's context): work whose results feed a stage that began before it. ``opens``: input
    records whose ``handle()`` is the stage only if it produces something (the span starts with the handle and is
    recorded at its first output): the agent's reply to an end-of-turn event or early transcript, which most of them
    do not give."""

    span: str
    starts: Callable[[Any], bool] | None = None
    opens: Callable[[Any], bool] | None = None
    ends: Callable[[Any], bool] | None = None
    began_us: Callable[[Any], int | None] | None = None
    attributes: Callable[[Any], dict[str, Any]] | None = None
    propagate: bool = True  # False: a side span; what the handle produces carries the record's own context


def _turn_attributes(r: TurnEvent) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if r.speech_end_us is not None:
        out["end_of_turn.silence_ms"] = round((r.ts_us - r.speech_end_us) / 1000)
        out["speech_ms"] = round((r.speech_end_us - r.speech_start_us) / 1000)
    reason = getattr(r, "end_reason", None)  # why the turn ended, where the record carries it
    if reason:
        out["end_of_turn.reason"] = str(reason)
    return out


TURN = Stage(
    "turn",
    ends=lambda r: isinstance(r, TurnEvent) and r.kind is TurnEventKind.END_OF_TURN,
    began_us=lambda r: r.speech_start_us,
    attributes=_turn_attributes,
)
STT_DECODE = Stage("stt.decode", starts=lambda r: isinstance(r, SpeechChunk) and r.final)
# the turn so far decoded at a pause (an early transcript for the end-of-turn judgement): inside the turn, so beside it
STT_EARLY = Stage(
    "stt.early",
    starts=lambda r: isinstance(r, SpeechChunk) and getattr(r, "pause", False) and not r.final,
    propagate=False,
)
AGENT_REPLY = Stage(
    "agent.reply",
    starts=lambda r: (isinstance(r, Transcript) and r.kind is TranscriptKind.FINAL)
    or (isinstance(r, CallEvent) and r.kind is CallEventKind.CALL_STARTED),
    # a reply said on the end of the turn (processors/agent/speculation.py), or made on an early transcript
    opens=lambda r: (isinstance(r, TurnEvent) and r.kind is TurnEventKind.END_OF_TURN)
    or (isinstance(r, Transcript) and r.kind is TranscriptKind.EARLY),
)
TTS_SENTENCE = Stage(
    "tts.sentence",
    starts=lambda r: isinstance(r, AgentReply) and r.kind is ReplyKind.SENTENCE,
    attributes=lambda r: {"sentence_seq": r.seq, "chars": len(r.text)},
)
# A processor may declare its own as a class attribute ``traced``; these are the spine's.
STAGES: dict[str, tuple[Stage, ...]] = {
    "turns": (TURN,),
    "stt": (STT_DECODE, STT_EARLY),
    "agent": (AGENT_REPLY,),
    "tts": (TTS_SENTENCE,),
}


def stages_of(processor: Any) -> tuple[Stage, ...]:
    traced = getattr(processor, "traced", None)
    return tuple(traced) if traced is not None else STAGES.get(getattr(processor, "name", ""), ())


def _record_ids(record: Any) -> dict[str, Any]:
    turn_seq = getattr(record, "turn_seq", None)
    if isinstance(record, CallEvent) and record.kind is CallEventKind.CALL_STARTED:
        turn_seq = 0  # the greeting is turn 0
    return ids(getattr(record, "call_id", None), turn_seq)


class HandleSpan:
    """The span of one ``handle()`` call of the runner, if its record (or one of its outputs) is a traced stage."""

    __slots__ = ("_end_ns", "_engine", "_pending", "_propagate", "_stages", "_topic", "_tp", "_traceparent", "span")

    def __init__(self, stages: tuple[Stage, ...], record: Any, traceparent: str, topic: str) -> None:
        self._stages, self._traceparent, self._topic = stages, traceparent, topic
        self.span: Span | None = None
        self._engine = False
        self._end_ns: int | None = None  # a drawn span ends at its output's time; a span around handle() at its end
        self._propagate = True
        self._tp = ""  # the span's traceparent, formatted once
        self._pending: tuple[Stage, Any, int] | None = None  # an ``opens`` stage, until the handle gives an output
        for stage in stages:
            if stage.starts is not None and stage.starts(record):
                self.span = self._open(stage, record, None)
                self._propagate = stage.propagate
                break
            if stage.opens is not None and stage.opens(record):
                self._pending = (stage, record, time.time_ns())
                break

    def _open_pending(self) -> None:
        if self._pending is not None:
            stage, record, start_ns = self._pending
            self.span, self._propagate, self._pending = self._open(stage, record, start_ns), stage.propagate, None

    def _open(self, stage: Stage, record: Any, start_ns: int | None) -> Span:
        attrs = {**_record_ids(record), "messaging.source": self._topic}
        if stage.attributes is not None:
            attrs |= stage.attributes(record)
        assert _tracer is not None
        return _tracer.start_span(stage.span, context=parent(self._traceparent), kind=SpanKind.CONSUMER,
                                  attributes=attrs, start_time=start_ns)

    def stamp(self, record: Any, corr: Correlation) -> Correlation:
        """An output of the handle: may end a stage (drawing its span), then carries the span's context."""
        self._open_pending()
        if self.span is None:
            for stage in self._stages:
                if stage.ends is not None and stage.ends(record):
                    began = stage.began_us(record) if stage.began_us is not None else None
                    self.span = self._open(stage, record, began * 1000 if began else None)
                    ts = getattr(record, "ts_us", None)
                    self._end_ns = ts * 1000 if ts else None
                    break
            else:
                # not (yet) a stage: pass the record's own context on, as a service without a span of its own does
                # (Correlation.child's fresh span ID names no recorded span), so the next span finds its parent
                if self._traceparent and corr.traceparent != self._traceparent:
                    return replace(corr, traceparent=self._traceparent)
                return corr
        if not self._engine and isinstance(engine := getattr(record, "engine", None), str) and engine:
            self.span.set_attribute("engine", engine)
            self._engine = True
        if not self._propagate:
            return replace(corr, traceparent=self._traceparent) if self._traceparent else corr
        if not self._tp:
            self._tp = traceparent_of(self.span)
        return replace(corr, traceparent=self._tp) if self._tp else corr

    def fail(self, exc: BaseException) -> None:
        self._open_pending()  # a handle that may have been the stage failed: its span says so
        if self.span is not None:
            self.span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:200]))

    def end(self) -> None:
        if self.span is not None:
            self.span.end(end_time=self._end_ns or time.time_ns())


def handle_span(stages: tuple[Stage, ...], record: Any, traceparent: str, topic: str) -> HandleSpan | None:
    """The runner's hook: None (nothing to do) while tracing is off or the processor has no traced stage."""
    if _tracer is None or not stages:
        return None
    return HandleSpan(stages, record, traceparent, topic)


# -- spans of the ingress ---------------------------------------------------------------------------------------------
class AudioWindow:
    """The ingress's span of a caller's audio: opened by the first record published after the call started or the
    agent's last answer began, closed when the next answer's first audio is written (or the call ends). Every audio
    record of the window carries its context, so the turns detected in it are its children; one span per window,
    never one per frame."""

    __slots__ = ("_corr", "_frames", "_span", "_stamped")

    def __init__(self, corr: Correlation) -> None:
        self._corr = corr  # the call's (its call-start span's) correlation: the window's parent
        self._span: Span | None = None
        self._frames = 0
        self._stamped = corr

    def corr(self, frames: int) -> Correlation:
        """The correlation of the next ``frames`` 20 ms frames of caller audio."""
        if self._span is None:
            self._span = start("caller.audio", self._corr.traceparent, kind=SpanKind.PRODUCER,
                               attributes=ids(self._corr.call_id, None))
            self._stamped = stamp(self._corr, self._span)
        self._frames += frames
        return self._stamped

    def close(self, why: str) -> None:
        if self._span is not None:
            self._span.set_attribute("frames", self._frames)
            self._span.set_attribute("closed_by", why)
            self._span.end()
            self._span, self._frames = None, 0



def call_start(call_id: str, channel: str) -> Span | None:
    """The root of a call's trace: the ingress publishing its call_started (None while tracing is off)."""
    return start("call.start", kind=SpanKind.PRODUCER, attributes={**ids(call_id, None), "channel": channel})


def first_audio(trace: tuple[str, int], call_id: str, turn_seq: int) -> Span | None:
    """The egress of a reply: from its first audio record's arrival at the ingress (``trace``: the record's
    traceparent and arrival time in ns) until that audio is written to the caller's socket; the caller ends it."""
    return start("egress.first_audio", trace[0], start_ns=trace[1], kind=SpanKind.CONSUMER,
                 attributes=ids(call_id, turn_seq))
