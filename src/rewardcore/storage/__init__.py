"""Durable storage, by job, for the engines that keep their state on disk (the durable
memory engine, rewardcore.backends.durable; shm:// with dir=, rewardcore.backends.shm):

    records     a log record: framing, checksum, payload (events, or their JSON lines)
    snapshots   snapshot files: the whole state, written atomically, read back checked
    log         the directory log: lock, generations, recovery, appends and fsync, rotation
    options     the URL options (fsync=, ms=, snapshot_mb=)

What each fsync policy can lose, and the file formats, are in docs/durable.md.
"""
