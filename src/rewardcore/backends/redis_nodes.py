"""Pipelined script calls to one Redis or to the masters of a Redis Cluster.

The engine hands over a list of script calls (script name, keys, args); every call's keys
share one hash tag, so each call goes to one node. Calls are grouped per node, written to
every node first and read back after, so a batch costs one round trip per node whatever
its size. Scripts are loaded on each node when the client opens (SCRIPT LOAD) and called by
EVALSHA; a NOSCRIPT reply (script cache flushed, node restarted) loads them again and
re-sends only the calls that were refused, which Redis did not run. MOVED/ASK (a slot moved)
refreshes the slot map and re-sends likewise. Any other failure surfaces as BackendError
naming the node and the script; the engine's scripts are idempotent, so the caller may
simply apply the batch again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import hiredis
import msgspec
import redis
from redis.backoff import NoBackoff
from redis.client import NEVER_DECODE
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    MovedError,
    NoScriptError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.retry import Retry

from .._url import redact_url
from ..errors import BackendError

SCRIPT_NAMES = ("mark_orders", "decide_batch")
# A shebang makes Redis refuse the whole script up front when it is out of memory, instead
# of failing its first write halfway (scripts without one are checked per write command).
SHEBANG = "#!lua\n"


def load_scripts(variants: str | None = None) -> dict[str, tuple[str, str]]:
    """Script name -> (source, sha1): the shebang, the generated constants, the script; with
    `variants`, a directory, its scripts of the same names in place of the package's
    (bench/redis_instructions.py --scripts measures variants so)."""
    lua = resources.files("rewardcore").joinpath("lua")
    prelude = lua.joinpath("_constants.lua").read_text("utf-8")
    out = {}
    for name in SCRIPT_NAMES:
        path = lua.joinpath(f"{name}.lua")
        if variants and os.path.exists(os.path.join(variants, f"{name}.lua")):
            path = Path(variants, f"{name}.lua")
        source = SHEBANG + prelude + path.read_text("utf-8")
        out[name] = (source, hashlib.sha1(source.encode("utf-8")).hexdigest())
    return out


_SCRIPTS = load_scripts()

# (script name, keys, args): one EVALSHA
Call = tuple[str, Sequence[str], Sequence[Any]]


class _Node:
    """One Redis server (a standalone one, or a cluster master) and its connection pool."""

    def __init__(self, name: str, pool: redis.ConnectionPool) -> None:
        self.name = name
        self.pool = pool

    def load(self) -> None:
        client = redis.Redis(connection_pool=self.pool)
        for name, (source, sha) in _SCRIPTS.items():
            got = client.script_load(source)
            if got != sha:  # pragma: no cover - would mean a different SHA1
                raise BackendError(f"redis {self.name}: SCRIPT LOAD of {name} gave {got}, "
                                   f"expected {sha}")


_unpack = msgspec.msgpack.Decoder().decode


def _evalsha(call: Call) -> tuple[Any, ...]:
    name, keys, args = call
    return ("EVALSHA", _SCRIPTS[name][1], len(keys), *keys, *args)


class Nodes:
    """The servers behind one backend URL: `run(calls)` runs script calls, pipelined."""

    def __init__(self, url: str, cluster: bool) -> None:
        self.url = url
        self.cluster = cluster
        # No silent retries: a command re-sent after a timeout might run twice. The scripts
        # make that harmless, but the caller should see the failure and decide.
        opts: dict[str, Any] = {"decode_responses": True, "retry": Retry(NoBackoff(), 0)}
        try:
            if cluster:
                self._rc: RedisCluster | None = RedisCluster.from_url(
                    url.replace("redis+cluster://", "redis://", 1)
                    .replace("rediss+cluster://", "rediss://", 1), **opts)
                self._nodes: dict[str, _Node] = {}
                self._slot_node: dict[int, _Node] = {}
            else:
                self._rc = None
                client = redis.Redis.from_url(url, **opts)
                self._single = _Node(redact_url(url), client.connection_pool)
            for node in self.all_nodes():
                node.load()
        except RedisError as exc:
            raise BackendError(f"redis {redact_url(url)}: cannot connect and load scripts: "
                               f"{exc}") from exc

    # -- topology -------------------------------------------------------------------------
    def all_nodes(self) -> list[_Node]:
        if self._rc is None:
            return [self._single]
        out = []
        for cn in self._rc.get_primaries():
            out.append(self._node_for(cn))
        return out

    def _node_for(self, cn: Any) -> _Node:
        assert self._rc is not None
        node = self._nodes.get(cn.name)
        if node is None:
            conn = self._rc.get_redis_connection(cn)
            node = _Node(cn.name, conn.connection_pool)
            self._nodes[cn.name] = node
        return node

    def node_of(self, key: str) -> _Node:
        """The node that holds `key` (all keys of one call share its hash tag)."""
        if self._rc is None:
            return self._single
        slot = key_slot(key.encode("utf-8"))
        node = self._slot_node.get(slot)
        if node is None:
            node = self._node_for(self._rc.nodes_manager.get_node_from_slot(slot))
            self._slot_node[slot] = node
        return node

    def refresh(self) -> None:
        """Re-read the cluster's slot map (a slot moved, or a node failed)."""
        if self._rc is not None:
            for node in self._nodes.values():
                node.pool.disconnect()
            self._slot_node.clear()
            self._nodes.clear()
            self._rc.nodes_manager.initialize()

    # -- calls ----------------------------------------------------------------------------
    def run(self, calls: Sequence[Call], what: str,
            wait: tuple[int, int] | None = None) -> list[Any]:
        """Run script calls; replies (MessagePack, decoded) in the calls' order. With
        `wait` = (replicas, timeout ms), each node's pipeline ends with WAIT and fewer
        confirmations than asked is an error. Raises BackendError."""
        results: list[Any] = [None] * len(calls)
        pending = list(range(len(calls)))
        for _attempt in range(3):
            groups: dict[_Node, list[int]] = {}
            for i in pending:
                groups.setdefault(self.node_of(calls[i][1][0]), []).append(i)
            replies = self._send(groups, calls, what, wait)
            pending = []
            reload: set[_Node] = set()
            moved = False
            for node, idx in groups.items():
                for i, r in zip(idx, replies[node], strict=True):
                    if isinstance(r, NoScriptError):
                        reload.add(node)
                        pending.append(i)
                    elif isinstance(r, (MovedError, AskError, TryAgainError)):
                        moved = True
                        pending.append(i)
                    elif isinstance(r, ResponseError):
                        raise BackendError(f"redis {node.name}: script {calls[i][0]} "
                                           f"({what}) failed: {r}")
                    else:
                        results[i] = _unpack(r) if isinstance(r, bytes) else r
            if not pending:
                return results
            try:
                for node in reload:
                    node.load()  # the script cache was flushed: register the scripts again
            except RedisError as exc:
                raise BackendError(f"redis {_names(reload)}: reloading scripts ({what}): "
                                   f"{exc}") from exc
            if moved:
                self.refresh()
            pending.sort()
        raise BackendError(f"redis: {len(pending)} call(s) of {what} still refused after "
                           "reloading scripts / refreshing the slot map")

    def _send(self, groups: dict[_Node, list[int]], calls: Sequence[Call],
              what: str, wait: tuple[int, int] | None) -> dict[_Node, list[Any]]:
        """Write every node's pipeline, then read every node's replies."""
        tail = [hiredis.pack_command(("WAIT", *wait))] if wait else []
        conns = {}
        replies: dict[_Node, list[Any]] = {}
        try:
            for node, idx in groups.items():
                conn = node.pool.get_connection()
                conns[node] = conn
                conn.send_packed_command(
                    [b"".join([hiredis.pack_command(_evalsha(calls[i])) for i in idx] + tail)],
                    check_health=False)
            for node, idx in groups.items():
                conn = conns[node]
                got = []
                for _ in idx:
                    try:
                        got.append(conn.read_response(disable_decoding=True))
                    except ResponseError as exc:
                        got.append(exc)
                replies[node] = got
                if wait:
                    # WAIT counts replicas that acknowledged this connection's writes
                    acked = conn.read_response()
                    if int(acked) < wait[0]:
                        raise BackendError(
                            f"redis {node.name}: {what}: only {acked} of {wait[0]} replica(s) "
                            f"confirmed the writes within {wait[1]} ms")
        except (RedisError, OSError) as exc:
            for conn in conns.values():
                conn.disconnect()  # a half-read pipeline must not be reused
            if self._rc is not None:
                with contextlib.suppress(RedisError):
                    self.refresh()
            raise BackendError(f"redis {_names(groups)}: {what} failed: "
                               f"{type(exc).__name__}: {exc}") from exc
        finally:
            for node, conn in conns.items():
                node.pool.release(conn)
        return replies

    def command(self, node: _Node, *args: Any) -> Any:
        """One plain command on one node (views, SCAN, DEL)."""
        try:
            return redis.Redis(connection_pool=node.pool).execute_command(*args)
        except RedisError as exc:
            raise BackendError(f"redis {node.name}: {args[0]} failed: {exc}") from exc

    def commands(self, per_node: dict[_Node, list[tuple[Any, ...]]], what: str,
                 raw: bool = False) -> dict:
        """Plain commands pipelined per node; {node: replies}, as bytes when `raw`."""
        out = {}
        options = {NEVER_DECODE: True} if raw else {}
        try:
            for node, cmds in per_node.items():
                pipe = redis.Redis(connection_pool=node.pool).pipeline(transaction=False)
                for c in cmds:
                    pipe.execute_command(*c, **options)
                out[node] = pipe.execute()
        except RedisError as exc:
            raise BackendError(f"redis {_names(per_node)}: {what} failed: {exc}") from exc
        return out

    def close(self) -> None:
        if self._rc is not None:
            for node in self._nodes.values():
                node.pool.disconnect()
            for cn in self._rc.get_nodes():
                if cn.redis_connection is not None:
                    cn.redis_connection.connection_pool.disconnect()
            self._rc.close()
        else:
            self._single.pool.disconnect()


def _names(nodes: Any) -> str:
    return ",".join(sorted(n.name for n in nodes))

