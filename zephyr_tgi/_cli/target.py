"""What is at the URL the command line was given: its base URL, whether it is TGI at all, healthy, the emulator.

People paste the URL of a route (`http://host:8080/generate`, an OpenAI-style `.../v1`) where the base URL
belongs; the routes TGI serves are known, so such a URL is cut back to its base with a note. `health` tells
"not reachable", "not TGI" and "unhealthy" apart, using only the client's `info()`/`health()` and its errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from zephyr_tgi import ServerInfo, ZephyrClient

__all__ = [
    "KNOWN_ROUTES",
    "BaseURL",
    "Diagnosis",
    "Health",
    "diagnose",
    "is_emulator",
    "split_route",
    "wrong_path_hint",
]

# Routes of TGI's router (router/src/server.rs; shared/reference/TGI.md §1) and the OpenAI-style prefix that
# can end a pasted URL, longest first.
KNOWN_ROUTES = (
    "/api-doc/openapi.json",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/models",
    "/generate_stream",
    "/chat_tokenize",
    "/invocations",
    "/generate",
    "/vertex",
    "/tokenize",
    "/metrics",
    "/health",
    "/ping",
    "/info",
    "/docs",
    "/v1",
)
_EMULATOR_PROBE = "/__emulator__/stats"  # the emulator's admin route (docs/testing.md); TGI has none


@dataclass(frozen=True, slots=True)
class BaseURL:
    """The URL to give the client, and the route that was cut off it (None when there was none)."""

    url: str
    dropped_route: str | None
    path: str  # what is left of the path: a proxy prefix, or "" for a bare host

    @property
    def note(self) -> str | None:
        """What to tell the person when a route was cut off."""
        if self.dropped_route is None:
            return None
        return f"note: {self.dropped_route} is a route, not part of the server's address: using {self.url}"


def split_route(url: str) -> BaseURL:
    """`url` without a known TGI route at the end of its path (query and fragment dropped with it)."""
    parts = urlsplit(url.strip())
    path = parts.path.rstrip("/")
    for route in KNOWN_ROUTES:
        if path == route or path.endswith(route):
            base_path = path[: -len(route)]
            base = urlunsplit((parts.scheme, parts.netloc, base_path, "", ""))
            return BaseURL(url=base, dropped_route=route, path=base_path)
    return BaseURL(url=url.strip(), dropped_route=None, path=path)


def wrong_path_hint(base: BaseURL) -> str | None:
    """A hint for a 404 when the URL has a path: the server probably lives at the bare host."""
    if not base.path:
        return None
    parts = urlsplit(base.url)
    bare = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
    return (
        f"hint: the URL has the path {base.path!r}; TGI serves its routes at the root, so the base URL is "
        f"probably {bare} (keep the path only for a proxy that serves TGI under it)"
    )


class Health(StrEnum):
    """What `zephyr-tgi health` found."""

    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"  # TGI answers, but /health is not 200 (loading, or a shard is down)
    NOT_TGI = "not TGI"  # something answers, but not TGI's /info
    UNREACHABLE = "not reachable"  # no connection at all


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """The verdict and the reason behind it."""

    health: Health
    detail: str
    info: ServerInfo | None = None


def diagnose(client: ZephyrClient) -> Diagnosis:
    """Ask `/info` (is it TGI?) then `/health` (is it healthy?)."""
    from zephyr_tgi import (
        APIConnectionError,
        APIStatusError,
        AuthenticationError,
        MalformedResponseError,
        ServerUnavailableError,
    )

    try:
        info = client.info()
    except APIConnectionError as exc:
        return Diagnosis(Health.UNREACHABLE, str(exc))
    except ServerUnavailableError as exc:  # TGI answers 503 while it cannot serve
        return Diagnosis(Health.UNHEALTHY, str(exc))
    except AuthenticationError as exc:
        return Diagnosis(Health.NOT_TGI, f"{exc} (TGI's /info needs no key: a proxy in front of it?)")
    except (APIStatusError, MalformedResponseError) as exc:
        return Diagnosis(Health.NOT_TGI, f"its /info is not TGI's: {exc}")
    if client.health():
        return Diagnosis(Health.HEALTHY, f"{info.model_id} (TGI {info.version or '?'})", info)
    return Diagnosis(Health.UNHEALTHY, f"{info.model_id} answers /info but /health is not 200", info)


def is_emulator(base_url: str, *, timeout: float = 2.0) -> bool:
    """Whether the server at `base_url` is zephyr_tgi's emulator (it answers its admin route; TGI does not)."""
    import httpx2

    try:
        response = httpx2.get(base_url.rstrip("/") + _EMULATOR_PROBE, timeout=timeout)
    except httpx2.HTTPError:
        return False
    if response.status_code != 200:
        return False
    try:
        return isinstance(response.json(), dict)
    except ValueError:
        return False
