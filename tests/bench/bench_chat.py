"""Chat speed (issue 6): scripted TALK/HEAR turns over the upstream WebSocket protocol against a live daphne,
beside a bare `websockets` echo server and the framework floor driven by the same client; memory per idle
connection; the latency of a cached LLM answer through the chat.

Printed: memory per idle connection; chat turns (p50, p99, turns/s); the bare echo server (p50, p99, round
trips/s); the floor (tests/bench/chat_floor_asgi.py in its own daphne): a Channels consumer that echoes, and one
that echoes through a channel-layer group_send (RedisPubSubChannelLayer, as the chat's events travel), each
with its share of the bare echo's rate; the chat's rate as a share of the bare echo and of both floors; the
cached answer.

Then the same sessions paced (BENCH_CHAT_PACED_RATES, turns/s offered by all of them together, each sending
BENCH_CHAT_PACED_TURNS messages spread over the period): the latency people see at that load, beside the bare
echo at the same pace. The closed-loop figures above are saturation: 200 sessions that all wait for their
answer and send again at once measure the queue (latency ~ sessions / rate, Little's law), so the bench also
prints the rate a closed-loop p99 within the goal would need.

Goals printed beside the figures (not asserted): turn p99 <= 30 ms, >= 30% of the echo server's round trips/s,
cached answer <= 20 ms. The floor is what daphne + Channels achieve with nothing of ours: no chat turn served
through them can beat it, so when the floor itself is below the goals on this machine (slower p99, a smaller
share of the bare echo), those goals cannot be reached by any chat code, and the figures show by how much.

Everything runs on this machine: a private PostgreSQL (var/bench-chat-pg, recreated) and redis-server, daphne
in a subprocess (tests/browser/harness.LiveServer), the echo server and the floor's daphne in two more, our
fake LLM (tests/support/llm_fake.py) in this process. Sizes: BENCH_CHAT_SESSIONS (200), BENCH_CHAT_TURNS
(20 per session), BENCH_CHAT_IDLE (200 idle connections), BENCH_CHAT_CACHED (50 cached answers).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gbplatform import serve

ROOT = Path(__file__).resolve().parents[2]
SESSIONS = int(os.environ.get("BENCH_CHAT_SESSIONS", "200"))
TURNS = int(os.environ.get("BENCH_CHAT_TURNS", "20"))
IDLE = int(os.environ.get("BENCH_CHAT_IDLE", "200"))
CACHED = int(os.environ.get("BENCH_CHAT_CACHED", "50"))
HOST = "bench-chat.localhost"
# Connections opened at once: a burst of 200 handshakes (each running start.bas) would measure the
# handshake queue, not the turns.
OPEN_BATCH = 20
# A reply slower than this is a failure, not a figure.
REPLY_TIMEOUT_S = float(os.environ.get("BENCH_CHAT_REPLY_TIMEOUT", "10"))
GOAL_P99_MS, GOAL_ECHO_SHARE, GOAL_CACHED_MS = 30.0, 0.30, 20.0
# Paced loads (turns/s offered by all sessions together) and the turns each session sends at each: people
# read an answer before they type the next message, so this is the latency they see at that load.
PACED_RATES = [float(r) for r in os.environ.get("BENCH_CHAT_PACED_RATES", "25,50").split(",") if r.strip()]
# daphne processes behind one socket (gbplatform.serve), as `make run` and the image start them.
WEB_PROCESSES = int(os.environ.get("BENCH_CHAT_WEB_PROCESSES") or 0) or serve.processes_default()
PACED_TURNS = int(os.environ.get("BENCH_CHAT_PACED_TURNS", "4"))
LOOP_SCRIPT = 'TALK "ready"\nDO\n    HEAR text\n    TALK "you said " + text\nLOOP\n'
QUESTION = "What are your opening hours?"
ANSWER = "We are open from Tuesday to Sunday, 9:00 to 18:00; the last entry is at 17:00."


def _ms(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    # The nearest-rank 99th percentile (with few samples, the largest rather than the smallest).
    return statistics.median(ordered) * 1000, ordered[max(0, math.ceil(len(ordered) * 0.99) - 1)] * 1000


# --- the echo server (run as `python -m tests.bench.bench_chat --echo-server <port>`) -----------------------


async def _echo_serve(port: int) -> None:
    from websockets.asyncio.server import serve

    async def echo(ws) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(echo, "127.0.0.1", port, max_size=2**20):
        await asyncio.Future()


def _serve_start(args: list[str], port: int, what: str, **popen) -> subprocess.Popen:
    """A server subprocess (our own interpreter and module), once its port accepts connections."""
    process = subprocess.Popen([sys.executable, *args], cwd=ROOT, **popen)  # noqa: S603
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{what} did not start")


def _echo_start(port: int) -> subprocess.Popen:
    return _serve_start(["-m", "tests.bench.bench_chat", "--echo-server", str(port)], port, "the echo server")


def _floor_start(port: int, redis_url: str, log_path: Path) -> subprocess.Popen:
    """daphne serving tests.bench.chat_floor_asgi (the framework floor), its output in log_path."""
    # Without DJANGO_SETTINGS_MODULE: the floor configures its own settings, none of the project's.
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    with open(log_path, "ab") as log:
        return _serve_start(["-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                             "tests.bench.chat_floor_asgi:application"], port, f"the floor's daphne (see {log_path})",
                            env={**env, "REDIS_URL": redis_url}, stdout=log, stderr=subprocess.STDOUT)


# --- clients ----------------------------------------------------------------------------------------------


async def _open(url: str, port: int):
    from websockets.asyncio.client import connect

    return await connect(url, host="127.0.0.1", port=port, proxy=None, open_timeout=120, max_size=2**22,
                         ping_interval=None)


async def _open_many(count: int, open_one) -> list:
    """Up to `count` open sockets. A handshake the server drops (daphne closes one its application did not
    accept within 5 s: an overloaded server) is counted in REFUSED and the run goes on with the others."""
    sockets = []
    for start in range(0, count, OPEN_BATCH):
        opened = await asyncio.gather(*(open_one() for _ in range(min(OPEN_BATCH, count - start))),
                                      return_exceptions=True)
        for result in opened:
            if isinstance(result, BaseException):
                REFUSED.append(f"{type(result).__name__}: {result}")
            else:
                sockets.append(result)
    return sockets


async def _chat_socket(port: int, bot: str):
    """A chat connection on a fresh session, after its start.bas greeting."""
    ws = await _open(f"ws://{HOST}:{port}/ws?bot_name={bot}", port)
    while True:
        frame = json.loads(await ws.recv())
        if frame.get("message_index") is not None and frame.get("content") == "ready":
            return ws
        if frame.get("type") == "error":
            raise RuntimeError(frame)


# Turns whose reply never came (see REPLY_TIMEOUT_S): counted and printed, the session stops there.
LOST: list[str] = []
# Connections whose handshake failed (see _open_many).
REFUSED: list[str] = []
# When each reply arrived (rates are counted up to the last one, not to the end of a lost turn's wait).
REPLIED_AT: list[float] = []
# The number of the last message each chat socket sent (its replies say it back).
_TURN_NUMBERS: dict = {}


async def _chat_turns(ws, latencies: list[float], count: int = TURNS) -> None:
    for _ in range(count):
        i = _TURN_NUMBERS[ws] = _TURN_NUMBERS.get(ws, -1) + 1
        expected = f"you said m{i}"
        started = time.perf_counter()
        await ws.send(json.dumps({"content": f"m{i}", "message_type": 1}))
        seen = []
        while True:
            try:
                raw = await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT_S)
            except TimeoutError:
                LOST.append(f"m{i}: no reply within {REPLY_TIMEOUT_S:g} s after {len(seen)} frame(s)")
                return
            seen.append(raw)
            if expected in raw and '"message_index"' in raw and '"role"' not in raw:
                break
            if '"type": "error"' in raw:
                raise RuntimeError(raw)
        REPLIED_AT.append(time.perf_counter())
        latencies.append(REPLIED_AT[-1] - started)


async def _echo_turns(ws, latencies: list[float], count: int = TURNS) -> None:
    for i in range(count):
        payload = json.dumps({"content": f"m{i}", "message_type": 1})
        started = time.perf_counter()
        await ws.send(payload)
        try:
            await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT_S)
        except TimeoutError:
            # A lost echo (the floor's group_send goes through Redis) counts like a lost chat reply.
            LOST.append(f"{ws.request.path} m{i}: no echo within {REPLY_TIMEOUT_S:g} s")
            return
        REPLIED_AT.append(time.perf_counter())
        latencies.append(REPLIED_AT[-1] - started)


async def _paced(ws, latencies: list[float], turns, period: float, offset: float) -> None:
    """`turns` one at a time, each sent `period` s after the previous one was sent (or at once when its reply
    came later than that): a user who reads the answer and types the next message."""
    import random

    await asyncio.sleep(offset)
    for _ in range(PACED_TURNS):
        started = time.perf_counter()
        await turns(ws, latencies, count=1)
        await asyncio.sleep(max(0.0, period - (time.perf_counter() - started)) * random.uniform(0.9, 1.1))


async def _paced_load(sockets: list, turns, rate: float) -> tuple[list[float], float]:
    """Latencies with the sessions together offering about `rate` turns/s (send times spread over a period),
    and the rate they got."""
    period = len(sockets) / rate
    latencies: list[float] = []
    REPLIED_AT.clear()
    started = time.perf_counter()
    await asyncio.gather(*(_paced(ws, latencies, turns, period, n * period / len(sockets))
                           for n, ws in enumerate(sockets)))
    return latencies, len(latencies) / ((REPLIED_AT[-1] if REPLIED_AT else time.perf_counter()) - started)


async def _load(sockets: list, turns) -> tuple[list[float], float]:
    """Latencies of every answered turn, and the time until the last answer (lost turns' waits excluded)."""
    latencies: list[float] = []
    started = time.perf_counter()
    await asyncio.gather(*(turns(ws, latencies) for ws in sockets))
    return latencies, (REPLIED_AT[-1] if REPLIED_AT else time.perf_counter()) - started


async def _close_all(sockets: list) -> None:
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


async def _echo_load(url: str, port: int, count: int = SESSIONS) -> tuple[list[float], float]:
    """Latencies and round trips/s of `count` sockets x TURNS echoes on `url`."""
    sockets = await _open_many(count, lambda: _open(url, port))
    REPLIED_AT.clear()
    latencies, wall = await _load(sockets, _echo_turns)
    await _close_all(sockets)
    return latencies, len(latencies) / wall


async def bench(port: int, echo_port: int, floor_port: int, pid: int, llm) -> None:
    import psutil

    server = psutil.Process(pid)

    def rss() -> int:  # the daphne process, or all of them behind gbplatform.serve
        return sum(p.memory_info().rss for p in [server, *server.children()] if "daphne" in " ".join(p.cmdline()))
    # Warm up (imports, connection pools, the first compile of the script).
    warm = await _open_many(OPEN_BATCH, lambda: _chat_socket(port, "loop"))
    await asyncio.gather(*(_chat_turns(ws, []) for ws in warm))
    LOST.clear()
    await _close_all(warm)
    await asyncio.sleep(3.0)  # the processes' preload (gbplatform.asgi) ends before memory is measured

    # Memory per idle connection: a connected session that ran start.bas and waits on HEAR.
    before = rss()
    idle = await _open_many(IDLE, lambda: _chat_socket(port, "loop"))
    await asyncio.sleep(1.0)
    after = rss()
    await _close_all(idle)
    print(f"memory per idle connection ({IDLE} connected sessions waiting on HEAR): "
          f"{(after - before) / IDLE / 1024:.1f} KiB ({WEB_PROCESSES} daphne RSS {before / 2**20:.0f} -> "
          f"{after / 2**20:.0f} MiB)")
    await asyncio.sleep(1.0)

    # Scripted TALK/HEAR turns on SESSIONS concurrent sessions.
    sockets = await _open_many(SESSIONS, lambda: _chat_socket(port, "loop"))
    REPLIED_AT.clear()
    chat_latencies, chat_wall = await _load(sockets, _chat_turns)
    chat_rate = len(chat_latencies) / chat_wall
    # The same sessions as users who read each answer before typing: latency at a stated load.
    paced = [(rate, await _paced_load(sockets, _chat_turns, rate)) for rate in PACED_RATES]
    await _close_all(sockets)

    echo_latencies, echo_rate = await _echo_load(f"ws://127.0.0.1:{echo_port}/", echo_port)
    echo_sockets = await _open_many(SESSIONS, lambda: _open(f"ws://127.0.0.1:{echo_port}/", echo_port))
    echo_paced = [await _paced_load(echo_sockets, _echo_turns, rate) for rate in PACED_RATES]
    await _close_all(echo_sockets)

    # The framework floor: the same load on daphne + Channels with nothing of ours (tests/bench/chat_floor_asgi),
    # after a warm-up of its own (the channel layer's first Redis connections).
    floor_echo_url, floor_group_url = f"ws://127.0.0.1:{floor_port}/echo", f"ws://127.0.0.1:{floor_port}/group"
    await _echo_load(floor_echo_url, floor_port, OPEN_BATCH)
    await _echo_load(floor_group_url, floor_port, OPEN_BATCH)
    floor_latencies, floor_rate = await _echo_load(floor_echo_url, floor_port)
    group_latencies, group_rate = await _echo_load(floor_group_url, floor_port)

    labels = (f"chat turns, {SESSIONS} sessions x {TURNS} TALK/HEAR turns (send -> reply frame):",
              "bare websockets echo server, same client and load:",
              "daphne + Channels echo consumer, same client and load:",
              "... + one channel-layer group_send per message:")
    width = max(map(len, labels)) + 1

    def figures(label: str, latencies: list[float]) -> str:
        p50, p99 = _ms(latencies)
        return f"{label:<{width}}p50 {p50:.1f} ms  p99 {p99:.1f} ms"

    print(f"{figures(labels[0], chat_latencies)} (goal p99 <= {GOAL_P99_MS:.0f} ms)  {chat_rate:.0f} turns/s")
    print(f"{figures(labels[1], echo_latencies)}  {echo_rate:.0f} round trips/s")
    print(f"{figures(labels[2], floor_latencies)}  {floor_rate:.0f} round trips/s "
          f"({floor_rate / echo_rate:.0%} of the bare echo)")
    print(f"{figures(labels[3], group_latencies)}  {group_rate:.0f} round trips/s "
          f"({group_rate / echo_rate:.0%})")
    print(f"chat rate / echo rate: {chat_rate / echo_rate:.0%} (goal >= {GOAL_ECHO_SHARE:.0%}); "
          f"of the Channels echo floor: {chat_rate / floor_rate:.0%}; "
          f"of the group_send floor: {chat_rate / group_rate:.0%}")
    # Closed loop, every session waits for its answer then sends again: by Little's law the latency is the
    # sessions divided by the rate, so a p99 within the goal needs the rate below, whatever serves it.
    needed = SESSIONS / (GOAL_P99_MS / 1000)
    print(f"(closed loop: {SESSIONS} sessions always waiting means latency ~ {SESSIONS} / rate; p99 <= "
          f"{GOAL_P99_MS:.0f} ms needs >= {needed:.0f} turns/s, {needed / echo_rate:.0%} of the bare echo's rate)")
    for (rate, (latencies, got)), (echo_paced_latencies, _) in zip(paced, echo_paced, strict=True):
        p50, p99 = _ms(latencies)
        e50, e99 = _ms(echo_paced_latencies)
        print(f"paced: {SESSIONS} sessions offering {rate:g} turns/s (each sends every {SESSIONS / rate:.1f} s): "
              f"chat p50 {p50:.1f} ms  p99 {p99:.1f} ms (goal p99 <= {GOAL_P99_MS:.0f} ms), {got:.1f} turns/s "
              f"served; bare echo at the same pace: p50 {e50:.1f} ms  p99 {e99:.1f} ms")
    # No chat served through daphne + Channels beats the plain consumer: if it misses a goal, so does the chat.
    _, floor_p99 = _ms(floor_latencies)
    missed = ([f"{floor_rate / echo_rate:.0%} of the bare echo < {GOAL_ECHO_SHARE:.0%}"]
              if floor_rate / echo_rate < GOAL_ECHO_SHARE else [])
    missed += [f"p99 {floor_p99:.1f} ms > {GOAL_P99_MS:.0f} ms"] if floor_p99 > GOAL_P99_MS else []
    if missed:
        print(f"the Channels echo floor itself misses a goal ({'; '.join(missed)}): no chat served through "
              "daphne + Channels reaches it on this machine")
    if REFUSED:
        print(f"REFUSED: {len(REFUSED)} handshakes failed (first: {REFUSED[0]}); the figures cover the sockets that "
              "opened")
    if LOST:
        print(f"LOST: {len(LOST)} sockets (of {SESSIONS} per measurement) got no reply to a turn "
              f"(first: {LOST[0]}); their remaining turns were not sent, so the figures above cover fewer turns")

    # A cached LLM answer through the chat: fresh sessions asking the same first question (the cache key is
    # the whole conversation), the first one filling the cache.
    async def ask() -> float | None:
        ws = await _open(f"ws://{HOST}:{port}/ws?bot_name=cached", port)
        try:
            while json.loads(await ws.recv()).get("type") != "connected":
                pass
            started = time.perf_counter()
            await ws.send(json.dumps({"content": QUESTION, "message_type": 1}))
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT_S))
                if frame.get("message_index") is not None and frame.get("role") != "user":
                    return time.perf_counter() - started
        except TimeoutError:
            LOST.append("a cached answer never came")
            return None
        finally:
            await ws.close()

    first = await ask() or 0.0
    served = llm.served
    answers = [await ask() for _ in range(CACHED)]
    cached = [a for a in answers if a is not None] or [0.0]
    c50, c99 = _ms(cached)
    print(f"cached answer through the chat ({CACHED} sessions, send -> final frame): p50 {c50:.1f} ms  "
          f"p99 {c99:.1f} ms (goal <= {GOAL_CACHED_MS:.0f} ms); first, uncached: {first * 1000:.1f} ms; "
          f"model calls for the cached ones: {llm.served - served}; lost: {answers.count(None)}")


# --- set-up -----------------------------------------------------------------------------------------------


def _deploy(drive: Path, llm_url: str) -> None:
    from django.core.management import call_command
    from django.test import override_settings
    from django_tenants.utils import schema_context

    from apps.bots.services import bot_deploy
    from apps.drive.package import package_read_dir
    from apps.tenants.services import public_tenant_ensure, template_schema_ensure, tenant_create
    from tests.browser.harness import write_package

    call_command("migrate_schemas", "--shared", verbosity=0)
    public_tenant_ensure()
    template_schema_ensure()
    tenant, _ = tenant_create(name="Bench chat", domain=HOST)
    packages = drive / "packages"
    bots = {
        "loop": {"loop.gbot/config.csv": "name,value\nrate-limit-enabled,false\n",
                 "loop.gbdialog/start.bas": LOOP_SCRIPT},
        "cached": {"cached.gbot/config.csv": ("name,value\nrate-limit-enabled,false\nllm-cache,true\n"
                                              f"llm-url,{llm_url}\nllm-model,fake-model\nllm-key,bench-key\n"),
                   "cached.gbdialog/hello.bas": 'TALK "hello"\n'},
    }
    with override_settings(MEDIA_ROOT=drive / "media", S3_ACCESS_KEY="", QDRANT_URL=""), \
            schema_context(tenant.schema_name):
        for name, files in bots.items():
            report = bot_deploy(package=package_read_dir(write_package(packages, name, files)))
            assert not report.errors, report.errors


def main() -> int:
    if sys.argv[1:2] == ["--echo-server"]:
        asyncio.run(_echo_serve(int(sys.argv[2])))
        return 0
    from gbplatform import localservices

    pgdata = ROOT / "var" / "bench-chat-pg"
    localservices.EmbeddedPostgres(pgdata=pgdata, socket_dir=str(pgdata), port=5432).stop()
    shutil.rmtree(pgdata, ignore_errors=True)
    postgres = localservices.postgres_start(pgdata)
    redis = localservices.redis_start(ROOT / "var" / "bench-chat-redis", persist=False)
    work = Path(tempfile.mkdtemp(prefix="bench-chat-"))
    env = {"DATABASE_URL": postgres.url, "REDIS_URL": redis.url, "DJANGO_SETTINGS_MODULE": "gbplatform.settings.test",
           "MEDIA_ROOT": str(work / "media"), "S3_ACCESS_KEY": "", "QDRANT_URL": "", "LLM_URL": "",
           "LLM_ALLOW_PRIVATE_HOSTS": "true", "LOG_LEVEL": "WARNING",
           # Every bench socket comes from 127.0.0.1: no address limit may refuse them.
           "CHAT_CONNECTS_PER_MINUTE": "1000000", "RATE_LIMIT_PLATFORM_IP_PER_MINUTE": "0",
           # As deployed (the test settings turn it off): each process loads the LLM SDKs and the model at start.
           "WEB_PRELOAD": "true"}
    os.environ.update(env)
    processes: list = []
    try:
        import django

        django.setup()
        from tests.browser.harness import LiveServer, free_port
        from tests.support.llm_fake import FakeLLMServer, Reply

        with FakeLLMServer(default=lambda request: Reply(text=ANSWER, chunk_chars=16)) as llm:
            _deploy(work, llm.base_url)
            from django.db import connections

            connections.close_all()
            server = LiveServer(env={**os.environ, **env}, log_path=ROOT / "var" / "bench-chat-daphne.log",
                                processes=WEB_PROCESSES)
            server.start()
            processes.append(server)
            echo_port = free_port()
            echo = _echo_start(echo_port)
            processes.append(echo)
            floor_port = free_port()
            processes.append(_floor_start(floor_port, redis.url, ROOT / "var" / "bench-chat-floor-daphne.log"))
            asyncio.run(bench(server.port, echo_port, floor_port, server.process.pid, llm))
    finally:
        for process in reversed(processes):
            if isinstance(process, subprocess.Popen):
                process.terminate()
                process.wait(10)
            else:
                process.stop()
        redis.stop()
        postgres.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
