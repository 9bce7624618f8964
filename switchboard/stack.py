"""``switchboard up``: the whole pipeline on one machine, each service its own process."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import http.client
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from pydantic import TypeAdapter, ValidationError

from switchboard.broker import EmbeddedBroker, can_bind, die_with_parent, listen_port, port_open, reclaim
from switchboard.bus import create_topics
from switchboard.credentials import ClientCredentials, StackCredentials, auth_off
from switchboard.services import SERVICES, Service
from switchboard.settings import ServiceSettings

logger = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent
# Variables whose names say they hold a secret. A SWITCHBOARD_* one reaches only the services whose settings declare
# it (the LLM key only the agent, the Azure Speech key only stt/tts, the auth secrets only the ingress); any other
# (OPENAI_API_KEY, AZURE_CLIENT_SECRET, read by SDK credential chains) only the agent, the one service that needs them.
SECRET_WORDS = ("KEY", "SECRET", "TOKEN", "PASSWORD", "SALT", "CREDENTIAL")
SDK_CREDENTIALS_SERVICE = "agent"


def secret_name(name: str) -> bool:
    return any(word in name.upper() for word in SECRET_WORDS)


def service_env(service: Service, environ: dict[str, str]) -> dict[str, str]:
    """``environ`` less the secrets ``service`` does not use."""
    declared = {f"SWITCHBOARD_{name.upper()}" for name in service.settings_class().model_fields}
    out = {}
    for name, value in environ.items():
        if name.startswith("SWITCHBOARD_"):
            if secret_name(name.removeprefix("SWITCHBOARD_")) and name not in declared:
                continue
        elif secret_name(name) and service.name != SDK_CREDENTIALS_SERVICE:
            continue
        out[name] = value
    return out


def _child_setup(service: str, tied_to_parent: bool, nice: int) -> None:
    """``preexec_fn`` of a worker: die with the stack if asked, and take its niceness before any thread exists, so
    every thread it starts (the event loop, the inference pool, onnxruntime's) inherits it."""
    if tied_to_parent:
        die_with_parent()
    if nice:
        try:
            os.nice(nice)
        except OSError as exc:  # below 0 without CAP_SYS_NICE: run at the default rather than not at all
            # one JSON line, as the worker's own log lines (its log file is this stream)
            line = {"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "level": "warning", "service": service,
                    "logger": "switchboard.stack", "msg": "niceness not applied, running at 0", "nice": nice,
                    "reason": exc.strerror or str(exc)}
            os.write(2, (json.dumps(line) + "\n").encode())


@dataclass
class Worker:
    service: Service
    index: int
    metrics_port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    started: float = field(default_factory=time.monotonic)


@dataclass
class Stack:
    settings: ServiceSettings
    ingress_port: int = 8080
    broker_port: int = 9092
    run_dir: Path = ROOT / ".switchboard"
    scale: dict[str, int] = field(default_factory=dict)
    only: tuple[str, ...] = ()
    extra_env: dict[str, str] = field(default_factory=dict)
    broker: EmbeddedBroker | None = None
    credentials: StackCredentials | None = None  # generated at start unless SWITCHBOARD_AUTH=off
    workers: list[Worker] = field(default_factory=list)
    tied_to_parent: bool = False  # children die with this process even if it is SIGKILLed (`switchboard up`)
    # a worker that keeps dying young (a missing model, a bad setting) is restarted with a growing delay, as the
    # kubelet does, instead of ten times a second: (service, index) -> (quick deaths in a row, not before)
    _backoff: dict[tuple[str, int], tuple[int, float]] = field(default_factory=dict)
    _next_metrics_port: int = 9101

    def __post_init__(self) -> None:
        names = {s.name for s in SERVICES}
        for name, n in self.scale.items():
            if name not in names:
                raise ValueError(f"--scale {name}={n}: no such service (one of {', '.join(sorted(names))})")
            if n < 1:
                raise ValueError(f"--scale {name}={n}: at least 1")
        # the workers read SWITCHBOARD_PARTITIONS from extra_env (it beats the shell): their topics get it too
        given = self.extra_env.get("SWITCHBOARD_PARTITIONS")
        if given is not None:
            # checked by the setting's own field, as a worker will check it (model_copy would not validate)
            field_info = type(self.settings).model_fields["partitions"]
            try:
                n = TypeAdapter(Annotated[int, *field_info.metadata]).validate_python(given)
            except ValidationError as exc:
                raise ValueError(f"SWITCHBOARD_PARTITIONS: {exc.errors()[0]['msg']} (got {given!r})") from None
            self.settings = self.settings.model_copy(update={"partitions": n})
        self.check_ingress_nodes()

    @property
    def ingress_nodes(self) -> int:
        """Ingress processes on this box: more than one share the port (SO_REUSEPORT), each a node of its own."""
        return self.scale.get("ingress", 1)

    def shares_port(self, service: Service | None) -> bool:
        """An ingress process that is one of several on the port: a node index, SO_REUSEPORT and a metrics port of
        its own (the shared port's /metrics and /ready answer for whichever process the kernel picks)."""
        return service is not None and service.name == "ingress" and self.ingress_nodes > 1

    def check_ingress_nodes(self) -> None:
        # each node owns the reply partitions p % nodes == index: past the partition count a node would own none
        if self.ingress_nodes > self.settings.partitions:
            raise ValueError(f"--scale ingress={self.ingress_nodes}: at most one ingress node per audio.out "
                             f"partition (SWITCHBOARD_PARTITIONS={self.settings.partitions})")

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap if self.broker else self.settings.kafka_bootstrap

    @property
    def auth(self) -> bool:
        return not auth_off({**os.environ, **self.extra_env})

    @property
    def client_credentials(self) -> ClientCredentials:
        """What a client of this stack presents (empty with SWITCHBOARD_AUTH=off)."""
        if self.credentials is None or not self.auth:
            return ClientCredentials()
        return ClientCredentials.from_stack(self.credentials)

    @property
    def http_base(self) -> str:
        return f"http://127.0.0.1:{self.ingress_port}"

    def env(self, metrics_port: int, service: Service | None = None, index: int = 0) -> dict[str, str]:
        generated = {**self.credentials.ingress_env(), **self.credentials.sink_env()} if (
            self.credentials and self.auth) else {}  # service_env() below gives each service only its own
        # a stable name per worker (its stage and index): a restarted worker takes its predecessor's place at once
        membership = {"SWITCHBOARD_GROUP_INSTANCE_ID": f"{service.name}-{index}",
                      "SWITCHBOARD_MEMBER_DIR": str(self.run_dir / "members")} if service else {}
        # several ingress processes share the port, each its own node: its reply partitions are p % nodes == index
        nodes = {"SWITCHBOARD_INGRESS_NODE_INDEX": str(index),
                 "SWITCHBOARD_INGRESS_NODE_COUNT": str(self.ingress_nodes),
                 "SWITCHBOARD_REUSE_PORT": "true"} if self.shares_port(service) else {}
        # per-worker names beat the shell
        environ = {**generated, **os.environ, **membership, **self.extra_env, **nodes}
        return {
            **(service_env(service, environ) if service else environ),
            "SWITCHBOARD_KAFKA_BOOTSTRAP": self.bootstrap,
            "SWITCHBOARD_TOPIC_PREFIX": self.settings.topic_prefix,
            "SWITCHBOARD_PORT": str(self.ingress_port),
            "SWITCHBOARD_METRICS_PORT": str(metrics_port),
            "PYTHONUNBUFFERED": "1",
        }

    def one_box(self) -> None:
        """This stack has a broker of its own on this box: its topics get ``embedded_partitions`` unless
        SWITCHBOARD_PARTITIONS says otherwise, and every worker is told so. Call before ``start``."""
        if "partitions" in self.settings.model_fields_set or "SWITCHBOARD_PARTITIONS" in self.extra_env:
            return
        n = self.settings.embedded_partitions
        self.settings = self.settings.model_copy(update={"partitions": n})
        self.extra_env["SWITCHBOARD_PARTITIONS"] = str(n)
        self.check_ingress_nodes()

    def start(self, embedded: bool) -> None:
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        if embedded:
            self.one_box()
        if self.auth:
            self.credentials = StackCredentials.ensure(self.run_dir, {**os.environ, **self.extra_env})
        if embedded:
            self.reclaim_broker()  # one an earlier `up` left behind would hold the port
            if port_open("127.0.0.1", self.broker_port):
                raise RuntimeError(f"port {self.broker_port} is taken: set SWITCHBOARD_KAFKA_BOOTSTRAP or free it")
            self.broker = EmbeddedBroker(
                self.broker_port, log_path=self.run_dir / "logs" / "tansu.log", storage=self.settings.broker_storage,
                pidfile=self.broker_pidfile, tied_to_parent=self.tied_to_parent,
            ).start()
        self.create_topics()
        for service in SERVICES:
            if self.only and service.name not in self.only:
                continue
            for _ in range(self.scale.get(service.name, 1)):
                self.spawn(service)

    def create_topics(self) -> None:
        settings = self.settings.model_copy(update={"kafka_bootstrap": self.bootstrap})
        # also callable from async code (tests): run the admin client on its own loop
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, create_topics(settings)).result()

    def reclaim_broker(self) -> int | None:
        """Stop a broker an earlier `switchboard up` left running (it was SIGKILLed on a system without
        parent-death signals). Returns its pid."""
        return reclaim(self.broker_pidfile)

    @property
    def broker_pidfile(self) -> Path:
        """Per port: stacks in one checkout on other ports (tests) are not this one's to stop."""
        return self.run_dir / f"tansu-{self.broker_port}.pid"

    def spawn(self, service: Service, index: int | None = None, metrics_port: int | None = None) -> Worker:
        """Start a worker; ``index`` and ``metrics_port`` given to restart a dead one in its own place."""
        if index is None:
            taken = {w.index for w in self.workers if w.service is service}
            index = next(i for i in range(len(taken) + 1) if i not in taken)
        # a lone ingress serves its metrics on its own port (behind the metrics token); one of several needs its own
        alone = service.name == "ingress" and not self.shares_port(service)
        port = 0 if alone else (metrics_port or self._next_metrics_port)
        # taken by another program (its answers are not our metrics), or bound by a client socket
        # ... or the ingress's port, which its process may not have bound yet
        while port and metrics_port is None and (port == self.ingress_port or port_open("127.0.0.1", port)
                                                 or not can_bind("127.0.0.1", port)):
            port += 1
        if port and metrics_port is None:
            self._next_metrics_port = port + 1
        log_path = self.run_dir / "logs" / f"{service.name}-{index}.log"
        out = open(log_path, "ab")  # noqa: SIM115 - owned by the child
        nice = self.settings.service_nice.get(service.name, 0)
        setup = (functools.partial(_child_setup, service.name, self.tied_to_parent, nice)
                 if self.tied_to_parent or nice else None)
        proc = subprocess.Popen(
            [sys.executable, "-m", service.module], env=self.env(port, service, index), stdout=out,
            stderr=subprocess.STDOUT, cwd=ROOT, preexec_fn=setup,
        )
        worker = Worker(service, index, port, proc, log_path)
        self.workers.append(worker)
        return worker

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        pending = list(self.workers)
        while pending:
            for w in list(pending):
                if w.process.poll() is not None:
                    raise RuntimeError(f"{w.service.name} exited with {w.process.returncode}; see {w.log_path}")
                if self.worker_ready(w):
                    pending.remove(w)
            if time.monotonic() > deadline:
                raise TimeoutError(f"not ready after {timeout_s}s: {[w.service.name for w in pending]}")
            time.sleep(0.2)

    def worker_ready(self, w: Worker) -> bool:
        alone = w.service.name == "ingress" and not self.shares_port(w.service)
        url = f"http://127.0.0.1:{self.ingress_port}/ready" if alone else f"http://127.0.0.1:{w.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if alone:
                    return resp.status == 200
                if w.service.name == "ingress":  # one of several on the port: its own metrics say whether it is up
                    return re.search(rb"^switchboard_ingress_ready 1\.0$", resp.read(), re.MULTILINE) is not None
                m = re.search(rb'switchboard_assigned_partitions\{service="[^"]+"\} (\d+)', resp.read())
                return bool(m and float(m.group(1)) > 0)
        except (OSError, http.client.HTTPException):  # not listening yet, or not an HTTP server
            return False

    def stop_worker(self, w: Worker, kill: bool = False) -> None:
        if w.process.poll() is None:
            w.process.kill() if kill else w.process.terminate()
        try:
            w.process.wait(30)
        except subprocess.TimeoutExpired:
            w.process.kill()
            w.process.wait()
        self.workers.remove(w)

    def stop(self) -> None:
        # ingress first: it drains calls while the processors can still answer them
        for w in sorted(self.workers, key=lambda w: w.service.name != "ingress"):
            self.stop_worker(w)
        if self.broker:
            self.broker.stop()
            self.broker = None

    def dead(self) -> list[Worker]:
        return [w for w in self.workers if w.process.poll() is not None]

    def supervise(self) -> list[str]:
        """One round of supervision: a dead embedded broker is restarted on its port and the topics re-created
        (it kept nothing), then every dead worker is started again in its place (same index, so the same
        group_instance_id, and the same metrics port). Returns what was restarted, for the log."""
        done = []
        if self.broker is not None and not self.broker.alive():
            code = self.broker.process.returncode if self.broker.process else None
            t0 = time.monotonic()
            self.broker.restart()
            self.create_topics()
            done.append(f"broker (exit {code}) in {time.monotonic() - t0:.2f} s")
        now = time.monotonic()
        for w in self.dead():
            key = (w.service.name, w.index)
            quick, not_before = self._backoff.get(key, (0, 0.0))
            if not_before:  # waiting out a back-off
                if now < not_before:
                    continue
            else:
                quick = quick + 1 if now - w.started < 10 else 0
                if quick > 1:  # died young again: wait 1, 2, 4 … 30 s (the first death restarts at once)
                    self._backoff[key] = (quick, now + min(30.0, 2.0 ** (quick - 2)))
                    continue
            self._backoff[key] = (quick, 0.0)
            self.workers.remove(w)
            self.spawn(w.service, index=w.index, metrics_port=w.metrics_port or None)
            done.append(f"{w.service.name}-{w.index} (exit {w.process.returncode})")
        return done


@contextlib.contextmanager
def local_stack(
    broker: EmbeddedBroker, run_dir: Path, only: tuple[str, ...] = (), env: dict[str, str] | None = None,
    prefix: str = "p", one_box: bool = False, scale: dict[str, int] | None = None,
) -> Iterator[Stack]:
    """Services on free loopback ports against ``broker``, under fresh topics (``prefix`` + a random suffix), their
    credentials in ``run_dir``; stopped on exit. What the specs and benchmarks run a call against. ``one_box``: the
    broker is this stack's alone, as an embedded one is (``Stack.one_box``); ``scale``: copies per service."""
    settings = ServiceSettings(kafka_bootstrap=broker.bootstrap, topic_prefix=f"{prefix}{uuid.uuid4().hex[:8]}.")
    stack = Stack(settings, ingress_port=listen_port(), run_dir=run_dir, only=only, extra_env=dict(env or {}),
                  scale=dict(scale or {}))
    stack._next_metrics_port = listen_port()
    if one_box:
        stack.one_box()
    try:
        stack.start(embedded=False)
        stack.wait_ready()
        yield stack
    finally:
        stack.stop()


@contextlib.contextmanager
def scratch_stack(
    name: str, only: tuple[str, ...] = (), env: dict[str, str] | None = None, scale: dict[str, int] | None = None,
) -> Iterator[Stack]:
    """``local_stack`` with its own tansu, everything in a temporary directory (``stack.run_dir``) removed on exit:
    a benchmark's stack, nothing shared with a running one, partitioned as an embedded stack is."""
    with tempfile.TemporaryDirectory(prefix=f"switchboard-{name}-") as tmp:
        broker = EmbeddedBroker(log_path=Path(tmp) / "tansu.log").start()
        try:
            with local_stack(broker, Path(tmp), only, env, prefix=name[:4], one_box=True, scale=scale) as stack:
                yield stack
        finally:
            broker.stop()
