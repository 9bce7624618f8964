"""The whole pipeline on the real broker, called through ACS media streaming and the JSON API:
each caller speaks a real clip and gets its transcript and the agent's voice back."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from switchboard.audio import read_wav, resample
from switchboard.caller import non_silent
from switchboard.stack import Stack
from switchboard.wer import wer
from tests.channels.callers import AcsCaller, JsonApiCaller
from tests.channels.schema import validate_server
from tests.conftest import SHARED_AUDIO

pytestmark = pytest.mark.slow
MAX_WER = 0.15


def clip(name: str, rate: int) -> tuple[np.ndarray, str]:
    samples, sr = read_wav(SHARED_AUDIO / f"{name}.wav")
    return resample(samples, sr, rate), (SHARED_AUDIO / f"{name}.txt").read_text().strip()


def bus_settings(stack: Stack):
    return stack.settings.model_copy(update={"kafka_bootstrap": stack.bootstrap})


async def test_acs_caller_at_24khz_barges_in_gets_stop_audio_then_its_transcript_and_the_answer(stack: Stack) -> None:
    speech, reference = clip("librivox-0870", 24_000)
    caller = AcsCaller(f"ws://127.0.0.1:{stack.ingress_port}/acs/media", bus_settings(stack), sample_rate=24_000,
                       credentials=stack.client_credentials)
    result = await caller.run(speech, barge_in_after_s=0.3)
    call = result.call

    assert result.stop_audio_after_speech_s, "talking over the greeting did not send StopAudio"
    # while the caller is still talking (the clip lasts 7 s), not at the end of the turn; 2 shared cores are slow
    assert result.stop_audio_after_speech_s[0] < 3.0
    assert result.payload_sizes == {960}, "agent audio is not 20 ms frames at the call's 24 kHz"
    [(turn, text)] = [(seq, t) for seq, t in call.transcripts.items() if seq > 0]
    assert wer(reference, text) <= MAX_WER, text
    assert len(call.agent_audio) >= 2 and non_silent(call.agent_audio[-1]), "no audible answer after the clip"
    assert call.latencies[turn].response_ms is not None


async def test_json_api_caller_gets_transcript_agent_response_audio_and_turn_metrics(stack: Stack) -> None:
    speech, reference = clip("librivox-0870", 16_000)
    base = f"http://127.0.0.1:{stack.ingress_port}"
    result = await JsonApiCaller(base, credentials=stack.client_credentials).run(speech)

    session_id = result.session["session_id"]
    for message in result.messages:
        validate_server(message)
    assert result.messages[0] == {"type": "session_started", "session_id": session_id,
                                  "call_id": result.session["call_id"], "sample_rate": 16000}
    finals = [m for m in result.of("transcript") if m["final"] and m["turn"] > 0]
    assert len(finals) == 1, "end_speech did not close exactly one turn"
    assert wer(reference, finals[0]["text"]) <= MAX_WER, finals[0]["text"]
    turn = finals[0]["turn"]
    assert [m["text"] for m in result.of("agent_response") if m["turn"] == turn], "no agent_response text"
    spoke_at = result.messages.index(finals[0])
    assert non_silent(result.agent_audio_after(spoke_at)), "no audible agent audio after the transcript"
    assert {m["sample_rate"] for m in result.of("agent_audio")} == {16000}
    [latency] = [m for m in result.of("latency") if m["turn"] == turn]
    assert (result.close_code, result.close_reason) == (1000, "call ended")

    async with httpx.AsyncClient(base_url=base, headers=stack.client_credentials.api_headers()) as client:
        metrics = (await client.get(f"/api/v1/calls/{session_id}/metrics")).json()
    assert metrics["state"] == "ended" and metrics["end_reason"] == "hangup"
    [turn_metrics] = [t for t in metrics["turns"] if t["turn"] == turn]
    assert turn_metrics["response_ms"] == pytest.approx(latency["response_ms"])
    assert 0 < turn_metrics["processing_ms"] <= turn_metrics["response_ms"]
