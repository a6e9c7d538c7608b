"""The names of the labels that say who owns a container (kept free of imports: the reaper starts on them)."""

from __future__ import annotations

__all__ = [
    "LABEL_CREATED",
    "LABEL_KEEP",
    "LABEL_OWNER_HOST",
    "LABEL_OWNER_PID",
    "LABEL_OWNER_PIDNS",
    "LABEL_OWNER_STARTED",
]

LABEL_OWNER_HOST = "zephyr_tgi.owner.host"
LABEL_OWNER_PID = "zephyr_tgi.owner.pid"
LABEL_OWNER_STARTED = "zephyr_tgi.owner.started"  # the owner process's start time, seconds since the epoch
# The owner's pid namespace (Linux): two containers can share a host name, never a pid namespace id.
LABEL_OWNER_PIDNS = "zephyr_tgi.owner.pidns"
LABEL_CREATED = "zephyr_tgi.created"  # ISO 8601, UTC
LABEL_KEEP = "zephyr_tgi.keep"  # "true": meant to outlive its owner (keep=True, `serve --detach`)
