"""Running the daemon: logging, the uvicorn server, the stream consumer, signals, shutdown.

Shutdown (SIGTERM or SIGINT): stop taking work (the listening socket closes, the stream
consumer reads nothing new), let in-flight requests and the stream batch in hand finish
within the grace period, drain the engine worker, write --state-out, close the engine and
the dead-letter file, log one "stop" line and exit 0. A second signal stops at once (exit 1);
stream entries not acknowledged by then stay pending and another consumer claims them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import prometheus_client
import uvicorn
import uvloop

from .._files import write_atomic
from ..backends import open_engine
from ..campaign import load_campaign
from ..engine import dump_state
from ..errors import RewardcoreError
from .app import DaemonContext, build_app
from .config import DaemonConfig
from .deadletters import DeadLetterSink
from .logs import AccessLog, log, log_stats, setup_logging
from .metrics import Metrics
from .worker import engine_worker

if TYPE_CHECKING:
    from .streams import StreamConsumer


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def redact_url(url: str) -> str:
    """The URL with any password replaced by ***, for logs and metrics."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise RewardcoreError(f"--http {host}:{port}: cannot listen: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run(cfg: DaemonConfig) -> int:
    """Run the daemon until it is stopped; the process's exit code."""
    setup_logging()  # again, for callers that do not come through the CLI
    # `*_created` series double the exposition and nothing here needs them.
    prometheus_client.disable_created_metrics()
    try:
        return uvloop.run(_serve(cfg))
    except RewardcoreError as exc:
        log.error("error", extra={"fields": {"error": str(exc), "exit": 2}})
        return 2


async def _serve(cfg: DaemonConfig) -> int:
    t0 = time.monotonic()
    campaign = load_campaign(cfg.campaign)
    engine = open_engine(campaign, cfg.backend)
    try:
        sock = _listen(cfg.host, cfg.port)
    except RewardcoreError:
        engine.close()
        raise
    metrics = Metrics(campaign, redact_url(cfg.backend), type(engine).scheme)
    dead = DeadLetterSink(cfg.dead_letters, cfg.dead_letters_kept, metrics)
    threaded = {"auto": None, "on": True, "off": False}[cfg.engine_thread]
    worker = engine_worker(engine, metrics, threaded=threaded, max_batch=cfg.max_batch)
    ctx = DaemonContext(campaign=campaign, backend=redact_url(cfg.backend), engine=engine,
                        worker=worker, metrics=metrics, dead=dead, token=cfg.token,
                        max_body=cfg.max_body)
    app = build_app(ctx)
    server = _Server(uvicorn.Config(
        AccessLog(app) if cfg.access_log else app, http="httptools", lifespan="off",
        access_log=False, log_config=None,
        server_header=False, timeout_graceful_shutdown=int(max(1, cfg.grace)),
        timeout_keep_alive=30))

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[str] = []
    tasks: dict[str, asyncio.Task[Any]] = {}
    consumer: StreamConsumer | None = None
    stats: asyncio.Task[None] | None = None

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        if len(received) == 1:
            stop.set()
            return
        # A second signal: stop now. Unacknowledged stream entries stay pending.
        server.force_exit = True
        for name in ("consumer", "http"):
            if name in tasks:
                tasks[name].cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    tasks["worker"] = asyncio.create_task(worker.run(), name="engine-worker")
    tasks["http"] = asyncio.create_task(server.serve(sockets=[sock]), name="http")
    while not server.started and not tasks["http"].done():
        await asyncio.sleep(0.005)
    exit_code = 0
    reason = ""
    try:
        if tasks["http"].done():
            raise RewardcoreError("the HTTP server did not start (see the error above)")
        if cfg.source is not None:
            from .streams import StreamConsumer  # loads redis.asyncio only when needed

            consumer = StreamConsumer(cfg.source, worker, metrics, dead,
                                      shared_engine=engine.shares_state)
            try:
                await consumer.start()
            except Exception as exc:
                raise RewardcoreError(f"--source {cfg.source.redacted()}: cannot start the "
                                      f"consumer: {exc}") from None
            tasks["consumer"] = asyncio.create_task(consumer.run(), name="stream-consumer")
        host, port = sock.getsockname()[:2]
        log.info("start", extra={"fields": {
            "pid": os.getpid(), "campaign": campaign.id, "backend": ctx.backend,
            "http": f"{host}:{port}", "port": port,
            "source": cfg.source.redacted() if cfg.source else None,
            "engine_thread": worker.threaded, "max_body": cfg.max_body,
            "max_batch": cfg.max_batch, "grace_s": cfg.grace, "log_every_s": cfg.log_every,
            "startup_s": round(time.monotonic() - t0, 3)}})
        if cfg.log_every > 0:
            stats = asyncio.create_task(log_stats(cfg.log_every, metrics, worker), name="stats")
        stop_wait = asyncio.create_task(stop.wait())
        watched = {stop_wait, tasks["http"], *([tasks["consumer"]] if consumer else [])}
        done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        if stop.is_set():
            reason = received[0]
        else:
            failed = next(iter(done))
            err = failed.exception() if not failed.cancelled() else None
            reason = f"{failed.get_name()} stopped"
            exit_code = 1
            log.error("error", exc_info=err, extra={"fields": {"where": failed.get_name()}})
    except RewardcoreError:
        reason, exit_code = "startup failed", 2
        raise
    finally:
        if stats is not None:
            stats.cancel()
        await _shutdown(cfg, ctx, server, consumer, tasks, received)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        summary = {"reason": reason, "exit": exit_code if len(received) < 2 else 1,
                   "events": worker.events_applied, "dead_letters": dead.total,
                   "forced": len(received) > 1, "uptime_s": round(time.monotonic() - t0, 3)}
        if consumer is not None:
            summary["stream_applied"] = consumer.applied
        if exit_code != 2:
            log.info("stop", extra={"fields": summary})
    return 1 if len(received) > 1 else exit_code


async def _shutdown(cfg: DaemonConfig, ctx: DaemonContext, server: _Server,
                    consumer: StreamConsumer | None, tasks: dict[str, asyncio.Task[Any]],
                    received: list[str]) -> None:
    ctx.stopping = True
    if consumer is not None:
        consumer.stop()
    server.should_exit = True
    # uvicorn enforces the grace period on requests; the consumer finishes its batch in hand.
    front = [t for n, t in tasks.items() if n != "worker"]
    _, late = await asyncio.wait(front, timeout=cfg.grace + 1.0) if front else (set(), set())
    for t in late:
        log.error("grace_exceeded", extra={"fields": {"task": t.get_name()}})
        t.cancel()
    if late:
        await asyncio.wait(late, timeout=1.0)
    ctx.worker.close()
    await tasks["worker"]  # everything queued before the close runs, in order
    try:
        if cfg.state_out:
            state = await ctx.worker.run_last(ctx.engine.export_state)
            write_atomic(cfg.state_out, dump_state(state))
        await ctx.worker.run_last(ctx.engine.close)
    except Exception as exc:
        log.error("error", exc_info=exc, extra={"fields": {"where": "shutdown"}})
    finally:
        ctx.worker.shutdown_executor()
        if consumer is not None:
            with contextlib.suppress(Exception):
                await consumer.close()
        ctx.dead.close()
