"""What a Twilio caller costs a Python websocket server before the ingress does anything: the floor under its CPU.

Issue 11 asks for ingress + turns ≤ 4 ms of CPU per call-second. This bench measures how much of that a server
spends just receiving a Twilio caller's 50 messages a second, step by step, so the ingress's own figure
(`bench/load_hop.py`, "CPU per call-second") can be read against what the transport alone costs:

- ``receive``: the ingress's stack (FastAPI on uvicorn, uvloop, sans-I/O websockets), ``await ws.receive()``
  in a loop and nothing else;
- ``parse``: and each message parsed by the ingress's Twilio serializer (JSON, checks, base64);
- ``decode``: and the media gathered into 60 ms records, μ-law decoded and resampled to 16 kHz
  (``ingress/twilio/uplink.py``), which is everything the ingress does to a frame before its call session;
- ``websockets``: the ``websockets`` library's own asyncio server (no ASGI, no uvicorn), receive and parse,
  for what the ASGI layers cost;
- ``granian``: the ``parse`` app served by granian (a Rust ASGI server) instead of uvicorn;
- ``picows``: picows's server (websocket framing in Cython, no ASGI), each message parsed in its frame callback;
- ``picows-decode``: picows handing each message to a task per socket (what the ingress's read loop would need),
  which parses and decodes it as ``decode`` does: what moving the media sockets to picows would save.

Each server runs alone in a process of its own; this process sends every caller's messages over loopback at
real time (uvloop), then reads the server's CPU seconds from /proc over the steady part of the run.

    .venv/bin/python bench/ingress_floor.py --callers 100 --seconds 20
    .venv/bin/python bench/ingress_floor.py --callers 100 --seconds 20 --modes receive,parse
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastapi import FastAPI, WebSocket  # noqa: E402  (module level: FastAPI resolves the endpoint's annotation here)

from switchboard.broker import free_port  # noqa: E402
from switchboard.load.procs import cpu_seconds  # noqa: E402

MODES = ("receive", "parse", "decode", "websockets", "granian", "picows", "picows-decode")
FRAME_S = 0.02
SILENCE = base64.b64encode(b"\xff" * 160).decode()  # 20 ms of μ-law silence, as Twilio sends it


# -- the servers (run with --serve MODE --port N) ------------------------------------------------------------


def serve(mode: str, port: int, aiofastnet: bool) -> None:
    import uvloop

    if mode.startswith("picows"):
        uvloop.run(serve_picows(mode, port, aiofastnet))
    elif mode == "websockets":
        uvloop.run(serve_websockets(port))
    elif mode == "granian":
        uvloop.run(serve_granian(port))
    else:
        import uvicorn

        uvicorn.run(fastapi_app(mode), host="127.0.0.1", port=port, log_config=None, lifespan="off",
                    ws_max_size=1 << 20)


def fastapi_app(mode: str) -> FastAPI:
    from ingress.twilio import serializer as wire
    from ingress.twilio.uplink import Uplink

    app = FastAPI()

    @app.websocket("/stream")
    async def stream(ws: WebSocket) -> None:
        await ws.accept()
        uplink = Uplink(60)
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            if mode == "receive":
                continue
            event = wire.parse(msg["text"])
            if mode == "decode" and isinstance(event, wire.Media):
                uplink.push(event.payload, 0)

    return app


async def serve_websockets(port: int) -> None:
    from websockets.asyncio.server import ServerConnection
    from websockets.asyncio.server import serve as ws_serve

    from ingress.twilio import serializer as wire

    async def handler(conn: ServerConnection) -> None:
        async for message in conn:
            wire.parse(message)

    async with ws_serve(handler, "127.0.0.1", port, max_size=1 << 20, compression=None):
        await asyncio.Future()


async def serve_granian(port: int) -> None:
    """The same FastAPI app and parse, served by granian (Rust, tokio) on this process's loop."""
    from granian.constants import Interfaces
    from granian.server.embed import Server

    await Server(fastapi_app("parse"), address="127.0.0.1", port=port, interface=Interfaces.ASGI,
                 log_enabled=False).serve()


async def serve_picows(mode: str, port: int, aiofastnet: bool) -> None:
    """picows (Cython): ``picows`` parses each message in the frame callback; ``picows-decode`` hands the
    messages to a task per socket, as the ingress's read loop would need (a deque and a future to wake it),
    which parses and decodes them as ``decode`` does. picows reads through aiofastnet's transport unless
    ``aiofastnet`` is off (the loop's own, as a websocket protocol inside uvicorn would)."""
    import collections

    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server

    from ingress.twilio import serializer as wire
    from ingress.twilio.uplink import Uplink

    class Parse(WSListener):
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type == WSMsgType.TEXT:
                wire.parse(frame.get_payload_as_bytes())

    class Decode(WSListener):
        def __init__(self) -> None:
            self.inbox: collections.deque[bytes | None] = collections.deque()
            self.waiter: asyncio.Future[None] | None = None
            self.task: asyncio.Task[None] | None = None

        def on_ws_connected(self, transport: WSTransport) -> None:
            self.task = asyncio.get_running_loop().create_task(self.read())

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type == WSMsgType.TEXT:
                self.put(frame.get_payload_as_bytes())

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            self.put(None)

        def put(self, message: bytes | None) -> None:
            self.inbox.append(message)
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(None)

        async def read(self) -> None:
            uplink = Uplink(60)
            while True:
                while not self.inbox:
                    self.waiter = asyncio.get_running_loop().create_future()
                    await self.waiter
                if (text := self.inbox.popleft()) is None:
                    return
                event = wire.parse(text)
                if isinstance(event, wire.Media):
                    uplink.push(event.payload, 0)

    listener = Parse if mode == "picows" else Decode
    server = await ws_create_server(lambda _request: listener(), "127.0.0.1", port, use_aiofastnet=aiofastnet)
    await server.serve_forever()


# -- the callers --------------------------------------------------------------------------------------------


async def caller(url: str, n: int, until: float, sent: list[int]) -> None:
    import websockets

    sid = f"MZ{n:032x}"
    async with websockets.connect(url, max_size=1 << 20, compression=None) as ws:
        await ws.send('{"event":"connected","protocol":"Call","version":"1.0.0"}')
        await ws.send(
            f'{{"event":"start","sequenceNumber":"1","streamSid":"{sid}","start":{{"streamSid":"{sid}",'
            f'"callSid":"CA{n:032x}","accountSid":"AC{0:032x}","tracks":["inbound"],"customParameters":{{}},'
            '"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}'
        )
        clock, chunk = time.monotonic(), 0
        while clock < until:
            delay = clock - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            chunk += 1
            await ws.send(  # the shape and size of a real Twilio media message
                f'{{"event":"media","sequenceNumber":"{chunk + 1}","streamSid":"{sid}","media":{{"track":"inbound",'
                f'"chunk":"{chunk}","timestamp":"{chunk * 20}","payload":"{SILENCE}"}}}}'
            )
            sent[0] += 1
            clock += FRAME_S


async def load(port: int, pid: int, callers: int, ramp_s: float, seconds: float) -> tuple[float, int]:
    """CPU seconds of the server per call-second over the steady window, and frames sent."""
    url = f"ws://127.0.0.1:{port}/stream"
    until = time.monotonic() + ramp_s + seconds + 1.0
    sent = [0]
    tasks = []
    for n in range(callers):
        tasks.append(asyncio.create_task(caller(url, n, until, sent)))
        await asyncio.sleep(ramp_s / callers)
    await asyncio.sleep(0.5)  # every caller connected and sending
    cpu0, t0 = cpu_seconds(pid) or 0.0, time.monotonic()
    await asyncio.sleep(seconds)
    cpu1, t1 = cpu_seconds(pid) or 0.0, time.monotonic()
    await asyncio.gather(*tasks, return_exceptions=True)
    return (cpu1 - cpu0) * 1000 / (callers * (t1 - t0)), sent[0]


def measure(mode: str, args: argparse.Namespace) -> tuple[float, int]:
    import uvloop

    port = free_port()
    argv = [sys.executable, __file__, "--serve", mode, "--port", str(port)]
    proc = subprocess.Popen(argv + (["--no-aiofastnet"] if args.no_aiofastnet else []), cwd=ROOT)
    try:
        deadline = time.monotonic() + 20
        while True:  # wait for the listener
            with contextlib.suppress(OSError):
                import socket

                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"the {mode} server did not start")
            time.sleep(0.1)
        return uvloop.run(load(port, proc.pid, args.callers, args.ramp, args.seconds))
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--callers", type=int, default=100, help="silent Twilio callers at once (default 100)")
    parser.add_argument("--ramp", type=float, default=5.0, help="seconds over which they connect (default 5)")
    parser.add_argument("--seconds", type=float, default=20.0, help="the measured window (default 20)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"which servers, in order (default {','.join(MODES)})")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each mode, alternating (default 1)")
    parser.add_argument("--no-aiofastnet", action="store_true",
                        help="picows on the event loop's own transport instead of aiofastnet's (what picows's framing "
                             "alone saves, as it would inside uvicorn)")
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, aiofastnet=not args.no_aiofastnet)
        return 0
    modes = [m for m in args.modes.split(",") if m]
    if unknown := set(modes) - set(MODES):
        parser.error(f"unknown modes {sorted(unknown)}; known: {', '.join(MODES)}")
    results: dict[str, list[float]] = {m: [] for m in modes}
    for r in range(args.repeat):
        for mode in modes:
            ms, sent = measure(mode, args)
            results[mode].append(ms)
            print(f"run {r + 1} {mode:<13} {ms:5.2f} ms CPU per call-second ({sent:,} messages sent)", flush=True)
    print(f"\n{args.callers} silent Twilio callers, {args.seconds:g} s measured; server CPU per call-second (median):")
    for mode in modes:
        print(f"  {mode:<13} {statistics.median(results[mode]):5.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
