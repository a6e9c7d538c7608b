"""The log lines `python -m zephyr_tgi.testing` prints, and the stage markers launchers look for.

Kept free of imports so that launcher code can reference the markers without loading the emulator.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["LOG_LINES", "STAGE_MARKERS"]

# Every line the CLI can emit, as "LEVEL target: message" templates; a timestamp is prepended.
ARGS_LINE = "INFO text_generation_launcher: Args {args}"
RUNTIME_LINE = "INFO text_generation_launcher: Runtime environment: {runtime}"
UNKNOWN_ARGS_LINE = "WARN text_generation_launcher: Ignoring unknown launcher arguments: {arguments}"
DOWNLOAD_LINE = "INFO download: text_generation_launcher: Starting check and download process for {model_id}"
DOWNLOADED_LINE = "INFO download: text_generation_launcher: Successfully downloaded weights for {model_id}"
SHARD_START_LINE = "INFO shard-manager: text_generation_launcher: Starting shard rank=0"
SHARD_READY_LINE = "INFO shard-manager: text_generation_launcher: Shard ready in {seconds}s rank=0"
WEBSERVER_LINE = "INFO text_generation_launcher: Starting Webserver"
WARMUP_LINE = "INFO text_generation_router_v3: backends/v3/src/lib.rs:125: Warming up model"
CONNECTED_LINE = "INFO text_generation_router::server: router/src/server.rs:2402: Connected"
LISTENING_LINE = "INFO zephyr_tgi.testing: Listening on {url}"
SIGNAL_LINE = (
    "INFO text_generation_router::server: router/src/server.rs:2478: signal received, starting graceful shutdown"
)
TERMINATING_LINE = "INFO text_generation_launcher: Terminating webserver"
TERMINATED_LINE = "INFO text_generation_launcher: webserver terminated"
SHUTDOWN_LINE = "INFO text_generation_launcher: Shutting down shards"
SHARD_STDERR_LINE = (
    "ERROR shard-manager: text_generation_launcher: Shard complete standard error output: {message} rank=0"
)
SHARD_FAILED_LINE = "ERROR text_generation_launcher: Shard 0 failed to start"
LOG_LINES: tuple[str, ...] = (
    ARGS_LINE,
    RUNTIME_LINE,
    UNKNOWN_ARGS_LINE,
    DOWNLOAD_LINE,
    DOWNLOADED_LINE,
    SHARD_START_LINE,
    SHARD_READY_LINE,
    WEBSERVER_LINE,
    WARMUP_LINE,
    CONNECTED_LINE,
    LISTENING_LINE,
    SIGNAL_LINE,
    TERMINATING_LINE,
    TERMINATED_LINE,
    SHUTDOWN_LINE,
    SHARD_STDERR_LINE,
    SHARD_FAILED_LINE,
)
# Launchers parse progress from these substrings of the lines above.
STAGE_MARKERS: Mapping[str, str] = {
    "args": "text_generation_launcher: Args",
    "download": "Starting check and download process for",
    "downloaded": "Successfully downloaded weights for",
    "shard_starting": "Starting shard rank=0",
    "shard_ready": "Shard ready in",
    "webserver": "Starting Webserver",
    "warmup": "Warming up model",
    "connected": "Connected",
    "listening": "Listening on",
    "shutdown": "signal received, starting graceful shutdown",
    "shard_failed": "Shard 0 failed to start",
}
