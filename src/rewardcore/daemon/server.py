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
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import prometheus_client
import uvicorn
import uvloop

from .._files import write_atomic
from .._url import redact_url
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


def _json_answer(status: int, message: str) -> bytes:
    """A whole HTTP/1.1 answer with a JSON error body, for the connection layer (which has
    no ASGI app to answer through); the connection is closed after it."""
    body = orjson.dumps({"error": message})
    phrase = HTTPStatus(status).phrase.encode()
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, phrase, len(body), body))


def protocol_class(cfg: DaemonConfig) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with the limits it lacks: a deadline for a request's
    headers (a connection that sends nothing, or headers slowly, is answered 408 and
    closed), a cap on their size (431), a cap on open connections (503 on connect), and
    JSON for its own error answers."""
    import httptools
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    header_timeout, max_header, max_connections = (cfg.header_timeout, cfg.max_header,
                                                    cfg.max_connections)

    class Protocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None
        _header_bytes = 0
        _refused = False
        _pending: tuple[int, str] | None = None  # an answer for the parser error raised

        def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
            if len(self.connections) >= max_connections:
                self._refused = True
                self.transport = transport  # type: ignore[assignment]
                transport.write(_json_answer(  # type: ignore[attr-defined]
                    503, f"too many connections: at most {max_connections} at once "
                         "(--max-connections); try again shortly"))
                transport.close()
                return
            super().connection_made(transport)  # type: ignore[arg-type]
            self._await_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_header_timer()
            if not self._refused:
                super().connection_lost(exc)

        def _await_headers(self) -> None:
            self._header_bytes = 0
            self._stop_header_timer()
            self._header_timer = self.loop.call_later(header_timeout, self._headers_late)

        def _stop_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self._close_with(408, f"request headers not received within {header_timeout:g}"
                                      " s (--header-timeout)")

        def _close_with(self, status: int, message: str) -> None:
            self.transport.write(_json_answer(status, message))
            self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            reading_headers = self._header_timer is not None
            super().data_received(data)
            if reading_headers and self._header_timer is not None:  # headers not complete
                self._header_bytes += len(data)
                if self._header_bytes > max_header and not self.transport.is_closing():
                    self._stop_header_timer()
                    self._close_with(431, f"request line and headers over {max_header} bytes "
                                          "(--max-header)")

        def on_headers_complete(self) -> None:
            self._stop_header_timer()
            size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
            if size > max_header:  # the whole header came in one read
                self._pending = (431, f"request line and headers over {max_header} bytes "
                                      "(--max-header)")
                raise httptools.HttpParserError("headers too large")  # answered below
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                # An idle connection is closed by the keep-alive timeout; a request that
                # has begun must bring its headers within the header timeout.
                self._header_bytes = 0

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._header_timer is None and self.cycle is not None:
                self._await_headers()

        def send_400_response(self, msg: str) -> None:
            if self._pending is not None:
                self._close_with(*self._pending)
                return
            self._close_with(400, f"{msg.rstrip('.')}: not a valid HTTP/1.1 request")

    return Protocol


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


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


def check_paths(cfg: DaemonConfig) -> None:
    """Refuse to start with a dead-letter file or a state-out directory that cannot be
    written: found at the first bad event, or at the stop, it would be too late. Both are
    tried for real (permission bits do not bind root)."""
    dead = Path(cfg.dead_letters)
    existed = dead.exists()
    try:
        if not existed:
            dead.parent.mkdir(parents=True, exist_ok=True)  # as the sink would
        with open(dead, "ab"):
            pass
    except OSError as exc:
        raise RewardcoreError(f"--dead-letters {dead}: cannot write it: "
                              f"{exc.strerror or exc}") from None
    if not existed:
        dead.unlink()  # the file is made on the first dead letter: no empty files
    if cfg.state_out:
        out = Path(cfg.state_out)
        if not out.parent.is_dir():
            raise RewardcoreError(f"--state-out {out}: the directory {out.parent} does not "
                                  "exist")
        probe = out.with_name(f".{out.name}.{os.getpid()}.probe")
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise RewardcoreError(f"--state-out {out}: cannot write in {out.parent}: "
                                  f"{exc.strerror or exc}") from None


async def _serve(cfg: DaemonConfig) -> int:
    t0 = time.monotonic()
    check_paths(cfg)
    campaign = load_campaign(cfg.campaign)
    engine = open_engine(campaign, cfg.backend)
    try:
        sock = _listen(cfg.host, cfg.port)
    except RewardcoreError:
        engine.close()
        raise
    metrics = Metrics(campaign, redact_url(cfg.backend), type(engine).scheme)
    dead = DeadLetterSink(cfg.dead_letters, cfg.dead_letters_kept, metrics,
                          raw_limit=cfg.dead_letter_raw)
    threaded = {"auto": None, "on": True, "off": False}[cfg.engine_thread]
    worker = engine_worker(engine, metrics, threaded=threaded, max_batch=cfg.max_batch)
    ctx = DaemonContext(campaign=campaign, backend=redact_url(cfg.backend), engine=engine,
                        worker=worker, metrics=metrics, dead=dead, token=cfg.token,
                        max_body=cfg.max_body, read_token=cfg.read_token,
                        public_winners=cfg.public_winners, body_timeout=cfg.body_timeout,
                        max_rejects_shown=cfg.max_rejects_shown)
    app = build_app(ctx)
    server = _Server(uvicorn.Config(
        AccessLog(app) if cfg.access_log else app, http=protocol_class(cfg), lifespan="off",
        access_log=False, log_config=None,
        server_header=False, timeout_graceful_shutdown=int(max(1, cfg.grace)),
        timeout_keep_alive=cfg.keep_alive))

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
            "read_token": bool(cfg.read_token), "public_winners": cfg.public_winners,
            "header_timeout_s": cfg.header_timeout, "body_timeout_s": cfg.body_timeout,
            "keep_alive_s": cfg.keep_alive, "max_header": cfg.max_header,
            "max_connections": cfg.max_connections,
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
