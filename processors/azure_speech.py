"""The Azure Speech SDK's configuration, created once per process and shared by the STT and TTS engines.

Credentials: a resource key with its region, or with an explicit endpoint
(sovereign clouds, private endpoints, tests). The key comes from the
environment or a file (``SecretStr`` in the settings) and is never logged.
The SDK is imported lazily: only the Azure engine modules import this.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr

from switchboard.settings import ServiceSettings

_lock = threading.Lock()
_configs: dict[tuple[str | None, str | None, str | None, str], Any] = {}


@dataclass(frozen=True, slots=True)
class AzureSpeech:
    key: str | None = field(repr=False)
    region: str | None = None
    endpoint: str | None = None  # wss://… overrides the region's default endpoint

    def config(self, purpose: str) -> Any:
        """A ``SpeechConfig`` for ``purpose`` ("stt" or "tts"), built once per process and credentials."""
        import azure.cognitiveservices.speech as speechsdk

        if not self.key:
            raise ValueError("Azure Speech needs a key: SWITCHBOARD_AZURE_SPEECH_KEY or "
                             "SWITCHBOARD_AZURE_SPEECH_KEY_FILE")
        k = (self.key, self.region, self.endpoint, purpose)
        with _lock:
            if k not in _configs:
                if self.endpoint:
                    _configs[k] = speechsdk.SpeechConfig(subscription=self.key, endpoint=self.endpoint)
                elif self.region:
                    _configs[k] = speechsdk.SpeechConfig(subscription=self.key, region=self.region)
                else:
                    raise ValueError("Azure Speech needs a region (SWITCHBOARD_AZURE_SPEECH_REGION) or an endpoint")
            return _configs[k]


class AzureSpeechSettings(ServiceSettings):
    """Settings of the Azure Speech resource (shared by the STT and TTS services)."""

    azure_speech_key: SecretStr | None = Field(None, description="Azure Speech resource key (never logged)")
    azure_speech_key_file: Path | None = Field(None, description="file holding the Azure Speech key (mounted secret)")
    azure_speech_region: str | None = Field(None, description="Azure Speech region, e.g. westeurope")
    azure_speech_endpoint: str | None = Field(None, description="explicit wss:// endpoint instead of the region's")

    def azure_speech(self) -> AzureSpeech:
        key = self.azure_speech_key.get_secret_value() if self.azure_speech_key is not None else None
        if key is None and self.azure_speech_key_file is not None:
            key = self.azure_speech_key_file.read_text().strip()
        return AzureSpeech(key, self.azure_speech_region, self.azure_speech_endpoint)
