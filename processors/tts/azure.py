"""Azure Speech synthesis, streamed as raw PCM at the bus rate: audio is yielded chunk by chunk as the
service produces it, before the whole sentence is synthesised. The voice is chosen per reply."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from xml.sax.saxutils import escape

import numpy as np

from processors.azure_speech import AzureSpeech
from switchboard.audio import BUS_RATE


class AzureTtsError(RuntimeError):
    pass


class AzureTts:
    name = "azure"

    def __init__(self, speech: AzureSpeech, voice: str = "en-US-AvaMultilingualNeural", rate: int = BUS_RATE) -> None:
        import azure.cognitiveservices.speech as speechsdk

        formats = {
            8000: speechsdk.SpeechSynthesisOutputFormat.Raw8Khz16BitMonoPcm,
            16000: speechsdk.SpeechSynthesisOutputFormat.Raw16Khz16BitMonoPcm,
            24000: speechsdk.SpeechSynthesisOutputFormat.Raw24Khz16BitMonoPcm,
            48000: speechsdk.SpeechSynthesisOutputFormat.Raw48Khz16BitMonoPcm,
        }
        config = speech.config("tts")
        config.set_speech_synthesis_output_format(formats[rate])
        self.voice = voice
        # one synthesizer per process: it keeps its connection to the service between sentences
        self.synth = speechsdk.SpeechSynthesizer(speech_config=config, audio_config=None)
        self.synth.synthesizing.connect(self._on_audio)
        self.synth.synthesis_completed.connect(lambda evt: self._put(None))
        self.synth.synthesis_canceled.connect(self._on_canceled)
        self._sink: tuple[asyncio.AbstractEventLoop, asyncio.Queue[Any]] | None = None
        self._lock = asyncio.Lock()

    def _put(self, item: Any) -> None:  # called on the SDK's threads
        sink = self._sink
        if sink is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed (shutdown): nobody waits any more
                sink[0].call_soon_threadsafe(sink[1].put_nowait, item)

    def _on_audio(self, evt: Any) -> None:
        self._put(bytes(evt.result.audio_data))

    def _on_canceled(self, evt: Any) -> None:
        details = evt.result.cancellation_details
        first_line = next(iter((details.error_details or "").splitlines()), "")[:200]
        self._put(AzureTtsError(f"{details.reason.name}: {first_line}"))

    def ssml(self, text: str, voice: str | None) -> str:
        return (
            '<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-US">'
            f'<voice name="{escape(voice or self.voice)}">{escape(text)}</voice></speak>'
        )

    async def synthesize(self, text: str, voice: str | None) -> AsyncIterator[np.ndarray]:
        async with self._lock:
            queue: asyncio.Queue[Any] = asyncio.Queue()
            self._sink = (asyncio.get_running_loop(), queue)
            self.synth.speak_ssml_async(self.ssml(text, voice))
            done = False
            carry = b""
            try:
                while True:
                    item = await queue.get()
                    if item is None:
                        done = True
                        return
                    if isinstance(item, Exception):
                        done = True
                        raise item
                    data, carry = carry + item, b""
                    if len(data) % 2:
                        data, carry = data[:-1], data[-1:]
                    if data:
                        yield np.frombuffer(data, dtype=np.int16)
            finally:
                self._sink = None
                if not done:  # cancelled (barge-in, deadline): stop the service's work too
                    self.synth.stop_speaking_async()
