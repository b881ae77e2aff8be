"""The standalone ingest daemon: `rewardcore serve`.

An HTTP API (Starlette on uvicorn with uvloop and httptools) and an optional Redis Streams
consumer group feed one engine. The engine is not thread-safe, so a single `EngineWorker`
owns it and runs every engine call, merging concurrent batches into one `apply`.

`rewardcore.daemon.cli` only builds the argument parser; the server's dependencies (the
`serve` extra) load when the daemon starts, so the rest of the CLI works without them.
"""
