"""Throwaway redis-server processes for tests and benchmarks: a standalone server and a
cluster.

Each server gets a free loopback port and its own temporary directory, keeps nothing on
disk, and is stopped (and waited for) on close. Nothing here talks to a Redis on 6379.
The test suite and `rewardcore bench` both use these, so they ship with the package.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REDIS_SERVER = shutil.which("redis-server") or "redis-server"
REDIS_CLI = shutil.which("redis-cli") or "redis-cli"


def free_port() -> int:
    """A loopback port free now; the cluster bus also needs port + 10000 free."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 < 65536:
            with socket.socket() as s2:
                try:
                    s2.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port


def _cli(port: int, *args: str, timeout: float = 10) -> str:
    out = subprocess.run([REDIS_CLI, "-p", str(port), *args], capture_output=True, text=True,
                         timeout=timeout)
    return out.stdout.strip()


class RedisServer:
    """One redis-server on 127.0.0.1, optionally in cluster mode."""

    def __init__(self, port: int | None = None, cluster: bool = False,
                 extra: tuple[str, ...] = ()) -> None:
        self.port = port or free_port()
        self.cluster = cluster
        self.extra = extra
        self.dir = Path(tempfile.mkdtemp(prefix=f"rc-redis-{self.port}-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.dir),
                "--logfile", str(self.dir / "redis.log"), *self.extra]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file",
                     str(self.dir / "nodes.conf"), "--cluster-node-timeout", "2000"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while _cli(self.port, "PING") != "PONG":
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server on port {self.port} did not start:\n{log}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        """Stop and start again on the same port (the data is gone: nothing is persisted)."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisCluster:
    """A cluster of `masters` redis-server nodes, slots spread by redis-cli --cluster create."""

    def __init__(self, masters: int = 3) -> None:
        self.nodes = [RedisServer(cluster=True) for _ in range(masters)]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> RedisCluster:
        for node in self.nodes:
            node.start()
        addrs = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run([REDIS_CLI, "--cluster", "create", *addrs, "--cluster-replicas", "0",
                        "--cluster-yes"], check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 30
        while not all("cluster_state:ok" in _cli(n.port, "CLUSTER", "INFO") for n in self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("redis cluster did not reach cluster_state:ok")
            time.sleep(0.1)
        return self

    def flushall(self) -> None:
        for node in self.nodes:
            _cli(node.port, "FLUSHALL")

    def close(self) -> None:
        for node in self.nodes:
            node.close()
