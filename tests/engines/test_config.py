"""Engines chosen by configuration alone, prices from configuration, secrets never shown."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from processors.agent.main import create_engine as create_agent
from processors.agent.openai_llm import Endpoint
from processors.agent.policy import ClinicPolicy
from processors.agent.settings import AgentSettings
from processors.azure_speech import AzureSpeech
from processors.resilience import Usage
from processors.stt.settings import SttSettings
from processors.usage import PriceTable
from tests.engines.calls import run, said, started
from tests.engines.openai_server import Fail

SECRET = "sk-live-abcdef0123456789"


def test_every_engine_is_chosen_by_environment_variables(monkeypatch, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(SECRET + "\n")
    monkeypatch.setenv("SWITCHBOARD_AGENT_ENGINE", "openai")
    monkeypatch.setenv("SWITCHBOARD_LLM_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("SWITCHBOARD_LLM_API_KEY_FILE", str(key_file))
    settings = AgentSettings()
    assert settings.llm_key() == SECRET
    router = create_agent(settings)
    assert router.name == "openai" and set(router.agents) == {"openai", "policy"}
    monkeypatch.setenv("SWITCHBOARD_AGENT_ENGINE", "policy")
    assert isinstance(create_agent(AgentSettings()), ClinicPolicy)
    monkeypatch.setenv("SWITCHBOARD_AZURE_STT_LANGUAGES", '["en-US","es-ES"]')
    assert SttSettings().azure_stt_languages == ["en-US", "es-ES"]


def test_unknown_engines_are_refused_by_name():
    with pytest.raises(ValueError, match="choose: policy, openai, azure_openai"):
        create_agent(AgentSettings(agent_engine="gpt"))


def test_the_pipeline_modules_import_no_vendor_sdk():
    code = ("import sys; import processors.agent.logic, processors.agent.main, processors.stt.main, "
            "processors.tts.main, processors.tts.logic, processors.stt.logic, switchboard.runner; "
            "print(sorted(m for m in ('openai', 'azure.cognitiveservices.speech') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_price_table_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("SWITCHBOARD_PRICES", '{"openai": {"llm_tokens_in": 0.001, "llm_tokens_out": 0.002}}')
    record = PriceTable().record("c1", Usage("agent", "openai", 3, llm_tokens_in=10, llm_tokens_out=5))
    assert record.cost_usd == pytest.approx(0.02) and (record.llm_tokens_in, record.turn_seq) == (10, 3)
    assert PriceTable().cost(Usage("stt", "whisper", stt_audio_seconds=60)) == 0.0


def test_secrets_are_never_shown():
    settings = AgentSettings(llm_api_key=SECRET)
    assert SECRET not in repr(settings) and SECRET not in settings.model_dump_json()
    assert SECRET not in repr(Endpoint(api_key=SECRET)) and SECRET not in repr(AzureSpeech(SECRET, "westeurope"))
    assert SECRET not in repr(SttSettings(azure_speech_key=SECRET))


async def test_a_failing_model_logs_no_credentials(llm, make_agent, caplog):
    agent = make_agent(llm_api_key=SECRET)
    llm.default = Fail(401, message="bad key " + SECRET[:6])
    with caplog.at_level(logging.DEBUG):
        await run(agent, started("c1"))
        await run(agent, said("c1", 1, "Hello"))
    assert llm.requests and SECRET not in caplog.text
    assert any("engine failed" in r.getMessage() for r in caplog.records)
