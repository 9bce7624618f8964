"""Azure Speech recognition: continuous recognition from a push stream fed with the turn's audio.

Audio is written to the push stream in about 250 ms chunks; interim hypotheses
(``recognizing``) come back as partial results, recognised phrases
(``recognized``) make up the final transcript. With more than one configured
language, the service identifies the language (at-start language ID).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

import numpy as np

from processors.azure_speech import AzureSpeech
from processors.stt.engine import SttResult


class AzureSttError(RuntimeError):
    pass


class AzureSttStream:
    def __init__(self, engine: AzureStt, language: str, sample_rate: int) -> None:
        import azure.cognitiveservices.speech as speechsdk

        self.sample_rate = sample_rate
        self.language = language
        self.chunk_bytes = sample_rate * 2 * engine.chunk_ms // 1000
        self.pending = b""
        self.samples = 0
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._partials: list[SttResult] = []
        self._latest = ""  # the newest interim hypothesis of the phrase being recognised
        self._finals: list[str] = []
        self._detected: str | None = None
        self._error: AzureSttError | None = None
        self._stopped = asyncio.Event()
        fmt = speechsdk.audio.AudioStreamFormat(samples_per_second=sample_rate, bits_per_sample=16, channels=1)
        self.stream = speechsdk.audio.PushAudioInputStream(fmt)
        audio = speechsdk.audio.AudioConfig(stream=self.stream)
        languages = engine.languages or [language]
        if len(languages) > 1:
            auto = speechsdk.languageconfig.AutoDetectSourceLanguageConfig(languages=languages)
            self.recognizer = speechsdk.SpeechRecognizer(speech_config=engine.config, audio_config=audio,
                                                         auto_detect_source_language_config=auto)
        else:
            self.recognizer = speechsdk.SpeechRecognizer(speech_config=engine.config, audio_config=audio,
                                                         language=languages[0])
        self.recognizer.recognizing.connect(self._on_recognizing)
        self.recognizer.recognized.connect(self._on_recognized)
        self.recognizer.canceled.connect(self._on_canceled)
        self.recognizer.session_stopped.connect(lambda evt: self._wake())
        self.recognizer.start_continuous_recognition_async()  # connects while the caller is still speaking

    # SDK callbacks run on the SDK's threads
    def _language(self, result: Any) -> str:
        import azure.cognitiveservices.speech as speechsdk

        detected = speechsdk.AutoDetectSourceLanguageResult(result).language
        return detected or self.language

    def _on_recognizing(self, evt: Any) -> None:
        with self._lock:
            self._latest = evt.result.text
            self._partials.append(SttResult(evt.result.text, False, self.samples * 1000 // self.sample_rate,
                                            self._language(evt.result)))

    def _on_recognized(self, evt: Any) -> None:
        if evt.result.text:
            with self._lock:
                self._latest = ""
                self._finals.append(evt.result.text)
                self._detected = self._language(evt.result)

    def _on_canceled(self, evt: Any) -> None:
        details = evt.cancellation_details
        if details.reason.name == "EndOfStream":
            return
        message = next(iter((details.error_details or "").splitlines()), "")[:200]
        with self._lock:
            self._error = AzureSttError(f"{details.reason.name}: {message}")
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed (shutdown): nobody waits any more
            self._loop.call_soon_threadsafe(self._stopped.set)

    def _raise_if_failed(self) -> None:
        with self._lock:
            if self._error is not None:
                raise self._error

    async def push(self, samples: np.ndarray) -> list[SttResult]:
        self._raise_if_failed()
        self.samples += len(samples)
        self.pending += samples.astype(np.int16).tobytes()
        if len(self.pending) >= self.chunk_bytes:
            self.stream.write(self.pending)
            self.pending = b""
        with self._lock:
            partials, self._partials = self._partials, []
        return partials

    async def early(self) -> SttResult:
        """The phrases recognised so far and the latest interim hypothesis, without waiting: a streaming engine
        has it already. Not final: the service revises interims, so the turn's final still comes from ``finish``."""
        with self._lock:
            text = " ".join([*self._finals, self._latest]).strip()
            language = self._detected or self.language
        return SttResult(text, False, self.samples * 1000 // self.sample_rate, language)

    async def finish(self) -> SttResult:
        """Close the audio and wait for the last phrase (bounded by the caller's deadline)."""
        self._raise_if_failed()
        if self.pending:
            self.stream.write(self.pending)
            self.pending = b""
        self.stream.close()
        try:
            await self._stopped.wait()
        finally:
            self.recognizer.stop_continuous_recognition_async()
        self._raise_if_failed()
        with self._lock:
            text = " ".join(self._finals)
            language = self._detected or self.language
        return SttResult(text, True, self.samples * 1000 // self.sample_rate, language)

    async def cancel(self) -> None:
        self.stream.close()
        self.recognizer.stop_continuous_recognition_async()


class AzureStt:
    name = "azure"

    def __init__(self, speech: AzureSpeech, languages: list[str] | None = None, chunk_ms: int = 250) -> None:
        self.config = speech.config("stt")  # built once per process
        self.languages = list(languages or [])
        self.chunk_ms = chunk_ms

    def open(self, language: str, sample_rate: int) -> AzureSttStream:
        return AzureSttStream(self, language, sample_rate)
