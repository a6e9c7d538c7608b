"""The emulator's own admin routes under /__emulator__/: stats, live faults, reset (no TGI counterpart)."""

from __future__ import annotations

from collections.abc import Callable

from ._core import Handler, RouterCore
from ._faults import faults_changes_from_json
from ._http import HTTPConnection, HTTPRequest

__all__ = ["ADMIN_PREFIX", "AdminRoutes"]

ADMIN_PREFIX = "/__emulator__/"


class AdminRoutes:
    """What the emulator image and other processes use to script faults and read stats over HTTP."""

    def __init__(self, core: RouterCore, on_reset: Callable[[], None]) -> None:
        self._core = core
        self._on_reset = on_reset

    def routes(self) -> dict[str, dict[str, Handler]]:
        """Path -> method -> handler."""
        return {
            ADMIN_PREFIX + "stats": {"GET": self._stats},
            ADMIN_PREFIX + "faults": {"GET": self._get_faults, "POST": self._set_faults},
            ADMIN_PREFIX + "reset": {"POST": self._reset},
        }

    async def _stats(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        await self._core.json(conn, 200, self._core.recorder.snapshot().to_json(), [])

    async def _get_faults(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        await self._core.json(conn, 200, self._core.faults.to_json(), [])

    async def _set_faults(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        try:
            self._core.faults.update(faults_changes_from_json(request.json_or_none()))
        except ValueError as exc:
            await self._core.json(conn, 400, {"error": str(exc), "error_type": "emulator"}, [])
            return
        await self._core.json(conn, 200, self._core.faults.to_json(), [])

    async def _reset(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        self._on_reset()
        await self._core.json(conn, 200, {}, [])
