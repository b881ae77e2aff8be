"""Snapshot files: the whole state of an engine (numpy arrays and plain values) written
atomically, with checksums, and read back; and the file errors the storage reports."""

from __future__ import annotations

import contextlib
import errno
import os
import struct
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
import numpy as np

from ..errors import BackendError
from .records import _enc

_SNAP_MAGIC = b"RCSNAP01"
_U32 = struct.Struct("<I")


def _os_error(path: Path, what: str, exc: OSError) -> BackendError:
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        reason += " (the directory must be writable)"
    elif exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        reason += " (no room for the log: free space, or move the directory)"
    return BackendError(f"{path}: {what}: {reason}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_snapshot(path: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray],
                   scalars: dict[str, Any]) -> int:
    """Write a snapshot atomically (temp file, fsync, rename, fsync dir); returns its size.

    Format: magic, u32 length + msgpack meta (with each array's dtype, shape, size and
    CRC32, and the scalars' length and CRC32) + u32 CRC32 of the meta, the arrays' bytes in
    meta order, then the msgpack scalars.
    """
    body = _enc.encode(scalars)
    order = sorted(arrays)
    specs = []
    for name in order:
        a = np.ascontiguousarray(arrays[name])
        arrays[name] = a
        specs.append([name, a.dtype.str, list(a.shape), a.nbytes, zlib.crc32(a.data)])
    meta = dict(meta, arrays=specs, scalars=[len(body), zlib.crc32(body)])
    head = _enc.encode(meta)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(_SNAP_MAGIC + _U32.pack(len(head)) + head + _U32.pack(zlib.crc32(head)))
            for name in order:
                f.write(arrays[name].data)
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
            size = f.tell()
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise _os_error(path, "cannot write snapshot", exc) from None
    return size


def _read_head(f: BinaryIO, path: Path) -> dict[str, Any]:
    if f.read(8) != _SNAP_MAGIC:
        raise BackendError(f"{path}: not a rewardcore snapshot (bad magic)")
    (n,) = _U32.unpack(f.read(4))
    head = f.read(n)
    (crc,) = _U32.unpack(f.read(4) or b"\0\0\0\0")
    if len(head) != n or zlib.crc32(head) != crc:
        raise BackendError(f"{path}: snapshot header is damaged (checksum mismatch)")
    return msgspec.msgpack.decode(head)


def read_snapshot_meta(path: Path) -> dict[str, Any]:
    """The meta of a snapshot (what `read_snapshot` returns first), without its arrays."""
    try:
        with open(path, "rb") as f:
            return _read_head(f, path)
    except (OSError, struct.error) as exc:
        raise BackendError(f"{path}: cannot read snapshot: {exc}") from None


def read_snapshot(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
    """(meta, arrays, scalars) of a snapshot; BackendError when it is damaged."""
    try:
        with open(path, "rb") as f:
            meta = _read_head(f, path)
            arrays = {}
            for name, dtype, shape, nbytes, acrc in meta["arrays"]:
                # readinto a fresh array: it stays writable, which the engines need
                a = np.empty(nbytes // max(np.dtype(dtype).itemsize, 1), dtype)
                if f.readinto(a.data.cast("B")) != nbytes or zlib.crc32(a.data) != acrc:
                    raise BackendError(f"{path}: snapshot array {name!r} is damaged")
                arrays[name] = a.reshape(shape)
            blen, bcrc = meta["scalars"]
            body = f.read(blen)
            if len(body) != blen or zlib.crc32(body) != bcrc:
                raise BackendError(f"{path}: snapshot values are damaged (checksum mismatch)")
    except OSError as exc:
        raise _os_error(path, "cannot read snapshot", exc) from None
    except struct.error as exc:  # a header cut short
        raise BackendError(f"{path}: cannot read snapshot: {exc}") from None
    return meta, arrays, msgspec.msgpack.decode(body)
