"""Tracing: every stage of a turn is a span of the call's trace, exported over OTLP/HTTP, chained through the
records' ``traceparent`` headers; with no endpoint, tracing is a no-op and records still carry a valid traceparent.

The pipeline test runs the real stack (each service its own process, the real broker and models) against an
OTLP/HTTP receiver started here, which decodes the real protocol (``ExportTraceServiceRequest`` protobuf)."""

from __future__ import annotations

import asyncio
import gzip
import http.server
import itertools
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from switchboard import codec, tracing
from switchboard.audio import BUS_RATE, read_wav, resample
from switchboard.bus import Correlation, Publisher, consumer_options, make_producer, topic_name
from switchboard.caller import TwilioCaller, Utterance
from switchboard.records import AgentReply, ReplyKind, Transcript, TranscriptKind, TurnEvent, TurnEventKind
from switchboard.runner import Incoming, Out, Runner
from switchboard.settings import ServiceSettings
from switchboard.topics import REPLIES, TRANSCRIPTS, Topic
from tests.conftest import SHARED_AUDIO
from tests.pipeline import running_stack

TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]$")
OTEL_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED",
                  "SWITCHBOARD_OTLP_ENDPOINT")
SPINE = ("ingress", "turns", "stt", "agent", "tts")
# (service, span) of each stage of a caller's turn, in causal order
TURN_STAGES = [("ingress", "caller.audio"), ("turns", "turn"), ("stt", "stt.decode"), ("agent", "agent.reply"),
               ("tts", "tts.sentence"), ("ingress", "egress.first_audio")]


# -- an OTLP/HTTP receiver ---------------------------------------------------------------------------------------------
@dataclass
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class OtlpReceiver:
    """``POST /v1/traces`` on a loopback port: decodes each ExportTraceServiceRequest and keeps its spans."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_error(404 if self.path != "/v1/traces" else 415)
                    return
                request = ExportTraceServiceRequest.FromString(body)
                receiver.take(request)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def take(self, request: ExportTraceServiceRequest) -> None:
        spans = []
        for rs in request.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    spans.append(ReceivedSpan(
                        resource.get("service.name", ""), s.name, s.trace_id.hex(), s.span_id.hex(),
                        s.parent_span_id.hex(), s.start_time_unix_nano, s.end_time_unix_nano,
                        {a.key: _value(a.value) for a in s.attributes},
                    ))
        with self._lock:
            self.requests += 1
            self.spans.extend(spans)

    def snapshot(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self.spans)

    async def wait_for(self, done: Callable[[list[ReceivedSpan]], bool], timeout_s: float) -> list[ReceivedSpan]:
        deadline = time.monotonic() + timeout_s
        while not done(spans := self.snapshot()) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return spans

    def __enter__(self) -> OtlpReceiver:
        threading.Thread(target=self.server.serve_forever, name="otlp-receiver", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def render(spans: list[ReceivedSpan]) -> str:
    """A text rendering of spans: service, span, start offset, duration (the README's "Tracing" example)."""
    t0 = min(s.start_ns for s in spans)
    lines = ["| service | span | start | duration | attributes |", "| --- | --- | --- | --- | --- |"]
    for s in sorted(spans, key=lambda s: s.start_ns):
        attrs = ", ".join(f"{k}={v}" for k, v in s.attributes.items() if k not in ("call_id", "turn_id"))
        lines.append(f"| {s.service} | {s.name} | +{(s.start_ns - t0) / 1e6:.0f} ms | "
                     f"{(s.end_ns - s.start_ns) / 1e6:.1f} ms | {attrs} |")
    return "\n".join(lines)


# -- the whole pipeline ------------------------------------------------------------------------------------------------
def _turn_spans(spans: list[ReceivedSpan], turn_id: str) -> dict[tuple[str, str], list[ReceivedSpan]]:
    by_stage: dict[tuple[str, str], list[ReceivedSpan]] = {}
    for s in spans:
        if s.attributes.get("turn_id") == turn_id:
            by_stage.setdefault((s.service, s.name), []).append(s)
    return by_stage


@pytest.mark.slow
async def test_every_stage_of_a_callers_turn_is_a_span_of_the_calls_trace_in_causal_order(
    broker, tmp_path, output_dir
) -> None:
    clip = SHARED_AUDIO / "librivox-0880.wav"  # the shortest clip: one caller turn
    samples, rate = read_wav(clip)
    with OtlpReceiver() as otlp, running_stack(
        broker, tmp_path, only=SPINE, OTEL_EXPORTER_OTLP_ENDPOINT=otlp.url, OTEL_BSP_SCHEDULE_DELAY="100"
    ) as stack:
        settings = stack.settings.model_copy(update={"kafka_bootstrap": stack.bootstrap})
        caller = TwilioCaller(f"ws://127.0.0.1:{stack.ingress_port}/twilio/media", settings,
                              credentials=stack.client_credentials)
        result = await caller.run([Utterance(resample(samples, rate, BUS_RATE), clip.name)])
        turn = min(seq for seq in result.latencies if seq > 0)  # the caller's (first answered) turn
        turn_id = f"{result.call_id}:{turn}"

        def complete(spans: list[ReceivedSpan]) -> bool:
            stages = _turn_spans(spans, turn_id)
            window = [s for s in spans if s.name == "caller.audio" and s.attributes.get("call_id") == result.call_id]
            return all(k in stages for k in TURN_STAGES[1:]) and len(window) >= 2
        spans = await otlp.wait_for(complete, timeout_s=30)

    call = [s for s in spans if s.attributes.get("call_id") == result.call_id]
    by_id = {s.span_id: s for s in call}
    stages = _turn_spans(call, turn_id)
    turn_span = stages[("turns", "turn")][0]
    # the caller's audio in which the turn was heard: the window the turn span descends from
    stages[("ingress", "caller.audio")] = [by_id[turn_span.parent_id]]
    missing = [k for k in TURN_STAGES if k not in stages]
    assert not missing, f"no span for {missing}; got {sorted({(s.service, s.name) for s in call})}"

    # one trace per call, rooted at the ingress's call start
    assert len({s.trace_id for s in call}) == 1, "every span of the call is in the call's trace"
    [root] = [s for s in call if not s.parent_id]
    assert (root.service, root.name) == ("ingress", "call.start")

    # each stage is the child of the one before it, through the records' traceparent
    first_sentence = min(stages[("tts", "tts.sentence")], key=lambda s: s.attributes["sentence_seq"])
    [reply] = [s for s in stages[("agent", "agent.reply")] if s.span_id == first_sentence.parent_id]
    decode = stages[("stt", "stt.decode")][0]
    # The reply follows the end of the turn directly when the agent said its speculative reply on the end-of-turn
    # event (the usual case), STT's final when that confirmed it, or the early transcript when the end of the turn
    # had overtaken it on the way to the agent (processors/agent/speculation.py).
    follows = {turn_span.span_id, decode.span_id} | {s.parent_id for s in stages.get(("stt", "stt.early"), [])}
    assert reply.parent_id in follows, "the reply follows the end of the turn, its final or its early transcript"
    assert decode.parent_id == turn_span.span_id, "STT's final is made on the end of the turn"
    upstream = [stages[("ingress", "caller.audio")][0], turn_span]
    upstream += [decode] if reply.parent_id == decode.span_id else []
    downstream = [reply, first_sentence, stages[("ingress", "egress.first_audio")][0]]
    assert by_id[upstream[0].parent_id] is root, "the caller's audio descends from the call start"
    assert reply.start_ns >= turn_span.start_ns
    for links in (upstream, downstream):
        for parent, child in itertools.pairwise(links):
            assert child.parent_id == parent.span_id, f"{child.name} is not a child of {parent.name}"
            assert child.start_ns >= parent.start_ns, f"{child.name} starts before {parent.name}"
    chain = upstream + downstream
    for sentence in stages[("tts", "tts.sentence")]:
        assert sentence.parent_id == reply.span_id
    # causal order of the stages' start times
    starts = [s.start_ns for s in chain]
    assert starts == sorted(starts), [(s.name, s.start_ns) for s in chain]
    assert all(s.end_ns >= s.start_ns for s in call)

    # attributes: the turn's IDs, the engines, the end of turn
    assert stages[("stt", "stt.decode")][0].attributes["engine"] == "moonshine"
    assert stages[("agent", "agent.reply")][0].attributes["engine"] == "policy"
    assert stages[("tts", "tts.sentence")][0].attributes["engine"]
    assert turn_span.attributes["end_of_turn.silence_ms"] > 0
    # the greeting is traced the same way: call start -> agent reply (turn 0) -> its sentences -> its first audio
    greeting = _turn_spans(call, f"{result.call_id}:0")
    assert by_id[greeting[("agent", "agent.reply")][0].parent_id] is root
    assert ("ingress", "egress.first_audio") in greeting
    # cheap: one caller-audio span per listening window, not per frame
    windows = [s for s in call if s.name == "caller.audio"]
    assert len(windows) <= 3 and sum(s.attributes["frames"] for s in windows) > 100

    # an early decode at a pause in the turn (when STT makes one) is recorded beside the chain, in the same window
    early = stages.get(("stt", "stt.early"), [])
    assert all(s.parent_id == chain[0].span_id for s in early)

    turn_trace = [root, *chain, *early, *[s for s in stages[("tts", "tts.sentence")] if s is not first_sentence]]
    (output_dir / "trace_one_turn.md").write_text(render(turn_trace) + "\n")


# -- the runner, without and with tracing -----------------------------------------------------------------------------
class Replier:
    """Turns each final transcript into one reply sentence (an agent in miniature)."""

    name = "replier"
    inputs: tuple[Topic, ...] = (TRANSCRIPTS,)
    traced = (tracing.Stage("replier.reply", starts=lambda r: isinstance(r, Transcript)),)

    async def handle(self, msg: Incoming) -> AsyncIterator[Out]:
        t: Transcript = msg.record
        yield Out(AgentReply(t.call_id, t.turn_seq, 0, ReplyKind.SENTENCE, f"you said {t.text}", 3, "echo", 1),
                  msg.corr.child())

    async def on_assigned(self, partitions: set[int]) -> None:
        return None

    async def on_revoked(self, partitions: set[int]) -> None:
        return None

    def commit_floor(self, topic: Topic, partition: int) -> int | None:
        return None


async def _one_reply(settings: ServiceSettings, traceparent: str) -> tuple[AgentReply, Correlation]:
    """Runs a Replier on the real broker for one transcript sent with ``traceparent``; its reply and headers."""
    call_id = f"CA{uuid.uuid4().hex}"
    producer = make_producer(settings)
    await producer.start()
    try:
        corr = Correlation(call_id=call_id, turn_id=f"{call_id}:7", traceparent=traceparent)
        transcript = Transcript(call_id, 7, TranscriptKind.FINAL, "hello", "en-US", 900, "moonshine", 1)
        await (await Publisher(settings, producer, "test").send(transcript, corr))
    finally:
        await producer.stop()
    runner = Runner(settings, Replier())
    task = asyncio.create_task(runner.run())
    consumer = AIOKafkaConsumer(group_id=None, **consumer_options(settings))
    await consumer.start()
    try:
        name = topic_name(settings, REPLIES)
        tps = [TopicPartition(name, p) for p in consumer.partitions_for_topic(name) or ()]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=200)).values():
                for m in msgs:
                    if m.key == call_id.encode():
                        return codec.decode(AgentReply, m.value), Correlation.from_headers(m.headers)
        raise AssertionError("no reply within 30 s")
    finally:
        await consumer.stop()
        runner.stop()
        await task


@pytest.fixture
def no_endpoint(monkeypatch) -> Iterator[None]:
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    tracing.shutdown()
    yield
    tracing.shutdown()


@contextmanager
def in_memory_tracing(service: str, settings: ServiceSettings) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert tracing.setup(service, settings, exporter=exporter)
    try:
        yield exporter
    finally:
        tracing.shutdown()


async def test_without_an_endpoint_tracing_is_off_and_records_still_carry_a_valid_traceparent(
    bus_settings, no_endpoint
) -> None:
    assert tracing.setup("replier", bus_settings) is False
    assert not tracing.enabled()
    assert not tracing.tracer().start_span("anything").is_recording(), "a no-op tracer"
    assert tracing.handle_span(Replier.traced, object(), "", "transcripts") is None, "the runner does nothing"
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    reply, corr = await _one_reply(bus_settings, f"00-{trace_id}-{span_id}-01")
    assert reply.text == "you said hello"
    m = TRACEPARENT.match(corr.traceparent)
    assert m, corr.traceparent
    assert m.group(1) == trace_id, "the call's trace goes on"
    assert m.group(2) != span_id, "a span of its own (Correlation.child)"
    assert corr.call_id == reply.call_id and corr.turn_id == f"{reply.call_id}:7"


async def test_with_tracing_on_the_runner_spans_a_traced_handle_and_its_outputs_carry_the_span(
    bus_settings, no_endpoint
) -> None:
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    with in_memory_tracing("replier", bus_settings) as exporter:
        reply, corr = await _one_reply(bus_settings, f"00-{trace_id}-{span_id}-01")
        tracing.flush()
        [span] = [s for s in exporter.get_finished_spans() if s.name == "replier.reply"]
    assert span.resource.attributes["service.name"] == "replier"
    assert f"{span.context.trace_id:032x}" == trace_id, "the span joins the record's trace"
    assert span.parent is not None and f"{span.parent.span_id:016x}" == span_id, "a child of the record's span"
    assert corr.traceparent == f"00-{trace_id}-{span.context.span_id:016x}-01", "the output carries the span"
    assert span.attributes["call_id"] == reply.call_id
    assert span.attributes["turn_id"] == f"{reply.call_id}:7"
    assert span.attributes["engine"] == "echo", "the engine named by an output"
    assert span.end_time >= span.start_time


def test_a_turn_span_is_drawn_from_speech_onset_to_the_decision_when_the_end_of_turn_is_produced(
    bus_settings, no_endpoint
) -> None:
    onset_us, last_voiced_us, decided_us = 1_700_000_000_000_000, 1_700_000_002_000_000, 1_700_000_002_700_000
    inbound = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    with in_memory_tracing("turns", bus_settings) as exporter:
        span = tracing.handle_span(tracing.STAGES["turns"], object(), inbound, "audio.in")
        assert span is not None and span.span is None, "an audio record alone opens no span"
        corr = Correlation(call_id="CA1", traceparent=inbound).child(42)  # as the turns logic makes it
        chunk_corr = span.stamp(object(), corr)
        assert chunk_corr.traceparent == inbound, "outputs before the end of turn pass the record's context on"
        assert chunk_corr.turn_id == "CA1:42"
        end = TurnEvent("CA1", 42, TurnEventKind.END_OF_TURN, decided_us, onset_us, speech_end_us=last_voiced_us,
                        end_reason="complete")
        out_corr = span.stamp(end, corr)
        span.end()
        tracing.flush()
        [turn] = exporter.get_finished_spans()
    assert turn.name == "turn"
    assert (turn.start_time, turn.end_time) == (onset_us * 1000, decided_us * 1000)
    assert f"{turn.parent.span_id:016x}" == "b" * 16 and f"{turn.context.trace_id:032x}" == "a" * 32
    assert out_corr.traceparent == f"00-{'a' * 32}-{turn.context.span_id:016x}-01"
    assert turn.attributes["turn_id"] == "CA1:42"
    assert turn.attributes["end_of_turn.silence_ms"] == 700
    assert turn.attributes["end_of_turn.reason"] == "complete"


def test_the_endpoint_comes_from_the_switchboard_setting_then_the_standard_variables() -> None:
    s = ServiceSettings(otlp_endpoint="http://jaeger:4318/")
    assert tracing.endpoint(s, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}) == "http://jaeger:4318/v1/traces"
    none = ServiceSettings(otlp_endpoint="")
    assert tracing.endpoint(none, {}) == ""
    assert tracing.endpoint(none, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}) == "http://c:4318/v1/traces"
    assert tracing.endpoint(none, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/traces"}) == (
        "http://c:4318/traces"
    )
    assert tracing.endpoint(s, {"OTEL_SDK_DISABLED": "true"}) == "", "the standard off switch wins"
