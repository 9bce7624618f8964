"""The whole pipeline, each service its own process, on the real broker:
a simulated Twilio caller speaks real speech and the agent answers on the same socket."""

from __future__ import annotations

import io
from collections.abc import Iterator

import avro.io
import avro.schema
import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from switchboard import codec
from switchboard.audio import BUS_RATE, read_wav, resample
from switchboard.bus import consumer_options, topic_name
from switchboard.caller import CallResult, TwilioCaller, Utterance, non_silent
from switchboard.settings import ServiceSettings
from switchboard.stack import Stack
from switchboard.topics import CATALOG
from switchboard.wer import wer
from tests.conftest import SHARED_AUDIO
from tests.pipeline import running_stack

pytestmark = pytest.mark.slow
CLIPS = sorted(SHARED_AUDIO.glob("*.wav"))
SPINE = ("ingress", "turns", "stt", "agent", "tts")


@pytest.fixture(scope="module")
def stack(broker, tmp_path_factory) -> Iterator[Stack]:
    # no filler: on a loaded box a reply later than 1.5 s waits for "One moment, please" to end, and that wait would
    # count as bus overhead in the per-stage accounting specified here (the filler has its own specs, tests/faults)
    with running_stack(broker, tmp_path_factory.mktemp("stack"), only=SPINE, SWITCHBOARD_FILLER_AFTER_MS="0") as s:
        yield s


def _settings(stack: Stack) -> ServiceSettings:
    return stack.settings.model_copy(update={"kafka_bootstrap": stack.bootstrap})


def _url(stack: Stack) -> str:
    return f"ws://127.0.0.1:{stack.ingress_port}/twilio/media"


def _caller(stack: Stack) -> TwilioCaller:
    """A caller that gets in as Twilio does, with the stack's credentials."""
    return TwilioCaller(_url(stack), _settings(stack), credentials=stack.client_credentials)


def _clip(path) -> Utterance:
    samples, rate = read_wav(path)
    return Utterance(resample(samples, rate, BUS_RATE), path.name)


@pytest.fixture(scope="module")
def clip_calls(stack) -> dict[str, CallResult]:
    """One call per clip, made once for the tests below."""
    import asyncio

    async def calls() -> dict[str, CallResult]:
        return {p.name: await _caller(stack).run([_clip(p)]) for p in CLIPS}

    return asyncio.run(calls())


@pytest.mark.parametrize("clip", [p.name for p in CLIPS])
def test_agent_answers_each_clip_with_audible_audio_on_the_same_socket_within_3_s(clip_calls, clip):
    result = clip_calls[clip]
    assert result.agent_audio, "no agent audio came back"
    assert non_silent(result.agent_audio[0]), "the greeting is silent"
    assert len(result.agent_audio) >= 2 and non_silent(result.agent_audio[-1]), "no audible answer to the caller"
    [latency] = [lat for seq, lat in result.latencies.items() if seq > 0]
    assert latency.response_ms is not None and latency.response_ms < 3000
    heard = result.heard_after_speech_s[0]
    assert heard is not None and heard < 3.0 + 1.0  # client-side, from the end of the clip (incl. its trailing pause)


@pytest.mark.parametrize("clip", [p.name for p in CLIPS])
def test_each_clip_is_transcribed_within_15_percent_word_error(clip_calls, clip):
    # On the default engine (Moonshine base-en). Whisper tiny.en, still selectable, hears 0880's
    # "ill disposed" as "old-sposed" (25 %) whatever the decoding options.
    result = clip_calls[clip]
    reference = (SHARED_AUDIO / clip).with_suffix(".txt").read_text()
    heard = " ".join(result.transcripts[k] for k in sorted(result.transcripts))
    assert wer(reference, heard) <= 0.15, heard


def test_latencies_of_every_stage_are_recorded_per_turn(clip_calls):
    for result in clip_calls.values():
        lat = next(lat for seq, lat in result.latencies.items() if seq > 0)
        t = lat.timings
        assert t.speech_end_us < t.turn_detected_us
        if t.stt_finished_us is None:
            # said on the end-of-turn event: the pause's early transcript, decoded in the silence, stood for the turn
            assert t.speculation == "used" and t.pause_detected_us < t.early_transcript_us
        else:
            assert t.turn_detected_us < t.stt_started_us < t.stt_finished_us
        assert t.agent_started_us <= t.agent_first_sentence_us < t.tts_started_us <= t.tts_first_audio_us
        assert t.tts_first_audio_us < t.egress_first_audio_us
        assert lat.bus_overhead_ms is not None and 0 < lat.bus_overhead_ms < 500


async def test_a_scripted_call_books_an_appointment(stack, piper_lines):
    result = await _caller(stack).run(piper_lines)
    said = " ".join(" ".join(r) for r in result.replies.values())
    assert "Which day" in said and "Tuesday" in said and "You're booked" in said, said
    assert result.close_code == 1000 and "ended" in result.close_reason  # the agent hung up after goodbye


@pytest.fixture(scope="module")
def piper_lines() -> list[Utterance]:
    from processors.tts.piper import PiperEngine

    piper = PiperEngine()
    # Piper samples its prosody anew on every synthesis; now and then a sample of "At 10 a.m." reached the agent
    # as words with no time in them, and the booking stalled (3 failures in ~27 runs). This spec is about the
    # booking flow, so the caller's lines are made without sampling: the same audio every run.
    piper.config.noise_scale = piper.config.noise_w_scale = 0.0
    lines = [
        "I'd like to book an appointment, please.",
        "Tuesday.",
        "At 10 a.m.",
        "Yes, that's right.",
        "No thanks, that's all. Goodbye.",
    ]
    return [Utterance(piper._synthesize(line), line) for line in lines]


async def test_speaking_during_the_agents_reply_clears_playback_and_stops_the_reply(stack):
    caller = _caller(stack)
    result = await caller.run([_clip(SHARED_AUDIO / "librivox-0870.wav")], wait_greeting=False)
    assert result.clears >= 1, "no clear was sent"
    greeting = result.agent_audio[0]
    full_greeting_s = 3.5  # "Thank you for calling Riverside Clinic. How can I help you today?"
    assert len(greeting) / 8000 < full_greeting_s - 1.0, "the greeting played on after the barge-in"
    assert non_silent(result.agent_audio[-1]), "the caller's turn was not answered after the barge-in"


async def test_every_record_on_every_topic_decodes_with_the_official_avro_library(stack, clip_calls):
    settings = _settings(stack)
    consumer = AIOKafkaConsumer(group_id=None, **consumer_options(settings))
    await consumer.start()
    counts = {}
    try:
        for topic in CATALOG:
            schema = avro.schema.parse((codec.SCHEMA_DIR / f"{topic.record.SCHEMA}.avsc").read_text())
            reader = avro.io.DatumReader(schema)
            tps = [TopicPartition(topic_name(settings, topic), p) for p in range(topic.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            n = 0
            while any([await consumer.position(tp) < end[tp] for tp in tps]):
                for msgs in (await consumer.getmany(timeout_ms=500)).values():
                    for msg in msgs:
                        decoded = reader.read(avro.io.BinaryDecoder(io.BytesIO(msg.value)))
                        assert isinstance(decoded, dict)
                        headers = dict(msg.headers)
                        if topic.name != "deadletter":
                            assert headers["call_id"].decode() == decoded["call_id"] == msg.key.decode()
                            assert headers["traceparent"].startswith(b"00-")
                        n += 1
            counts[topic.name] = n
    finally:
        await consumer.stop()
    for name in (
        "calls",
        "audio.in",
        "turns",
        "speech",
        "transcripts",
        "replies",
        "audio.out",
        "latency",
        "usage",
        "agent.state",
    ):
        assert counts[name] > 0, f"no records on {name}: {counts}"


def test_received_agent_audio_is_mulaw_8k_of_the_expected_length(clip_calls):
    result = next(iter(clip_calls.values()))
    greeting = result.agent_audio[0]
    assert 2.0 < len(greeting) / 8000 < 6.0
    assert np.abs(greeting).max() > 1000
