"""pytest plugin for zephyr_tgi users: a TGI emulator, a TGI container and ready clients as fixtures.

Loaded automatically through the `pytest11` entry point once zephyr-tgi is installed.

Fixtures:
    tgi_emulator          an in-process `TGIEmulator` (function scope: fast, fresh faults and stats per test);
                          configure it with `@pytest.mark.tgi(api_key=..., token_latency=..., faults=...)`.
    tgi_server            a TGI server for the session: the `zephyr-tgi-emulator` image by default; real TGI
                          with `--tgi-variant`/`--tgi-image`; an existing server with `--tgi-url`.
    zephyr_client         a `ZephyrClient` for the test's server: the `tgi_emulator` when the test uses it or
                          no server option was given, else `tgi_server`.
    async_zephyr_client   the same as an `AsyncZephyrClient` (needs pytest-asyncio).

Options: --tgi-url, --tgi-image, --tgi-variant, --tgi-gpus, --tgi-api-key, --tgi-startup-timeout.
Ini keys: tgi_image, tgi_startup_timeout. Marker: tgi (see `pytest --markers`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from zephyr_tgi import AsyncZephyrClient, ZephyrClient
    from zephyr_tgi._launcher.server import TGIServer
    from zephyr_tgi.testing import TGIEmulator

__all__ = [
    "EMULATOR_IMAGE",
    "ExternalTGIServer",
    "async_zephyr_client",
    "tgi_emulator",
    "tgi_server",
    "zephyr_client",
]

EMULATOR_IMAGE = "zephyr-tgi-emulator:latest"
_OUR_FIXTURES = ("tgi_emulator", "tgi_server", "zephyr_client", "async_zephyr_client")
_MARKER_HELP = (
    "tgi(**options): the test talks to a TGI server (set automatically on tests using the zephyr_tgi fixtures, "
    "so `-m 'not tgi'` deselects them); keyword options configure the `tgi_emulator` fixture, e.g. "
    "@pytest.mark.tgi(api_key='k', token_latency=0.01, max_total_tokens=2048)"
)


@dataclass(frozen=True)
class ExternalTGIServer:
    """A TGI server that runs already (`--tgi-url`): the part of `TGIServer`'s surface tests use."""

    url: str
    api_key: str | None = field(default=None, repr=False)

    def client(self, **kwargs: Any) -> ZephyrClient:
        """A `ZephyrClient` for this server, with its api key."""
        from zephyr_tgi import ZephyrClient

        kwargs.setdefault("api_key", self.api_key)
        return ZephyrClient(self.url, **kwargs)

    def async_client(self, **kwargs: Any) -> AsyncZephyrClient:
        """An `AsyncZephyrClient` for this server, with its api key."""
        from zephyr_tgi import AsyncZephyrClient

        kwargs.setdefault("api_key", self.api_key)
        return AsyncZephyrClient(self.url, **kwargs)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the --tgi-* options and ini keys."""
    group = parser.getgroup("zephyr_tgi", "zephyr-tgi: the TGI server behind the tgi_server fixture")
    group.addoption("--tgi-url", metavar="URL", help="use the running TGI server at URL instead of starting one")
    group.addoption(
        "--tgi-image",
        metavar="IMAGE",
        help=f"docker image for tgi_server (default: ini tgi_image, else {EMULATOR_IMAGE}; a real TGI image "
        "serves the real model on the GPU)",
    )
    group.addoption(
        "--tgi-variant",
        metavar="BRANCH",
        help="GPTQ branch to serve, e.g. gptq-4bit-32g-actorder_True; without --tgi-image this selects the real "
        "TGI image",
    )
    group.addoption(
        "--tgi-gpus",
        metavar="GPUS",
        help="GPUs for tgi_server: all, none, a count or device ids like 0,1 (default: none for the emulator "
        "image, all otherwise)",
    )
    group.addoption("--tgi-api-key", metavar="KEY", help="api key of --tgi-url, or to start tgi_server with")
    group.addoption(
        "--tgi-startup-timeout",
        type=float,
        metavar="SECONDS",
        help="how long tgi_server may take to become ready (default: ini tgi_startup_timeout, else 1800)",
    )
    parser.addini("tgi_image", f"default docker image for tgi_server (default {EMULATOR_IMAGE})", default="")
    parser.addini("tgi_startup_timeout", "seconds tgi_server may take to become ready (default 1800)", default="")


def pytest_configure(config: pytest.Config) -> None:
    """Document the `tgi` marker."""
    config.addinivalue_line("markers", _MARKER_HELP)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a zephyr_tgi fixture with `tgi`, so `-m 'not tgi'` deselects them."""
    for item in items:
        if any(name in getattr(item, "fixturenames", ()) for name in _OUR_FIXTURES):
            item.add_marker(pytest.mark.tgi)


def _emulator_options(node: pytest.Item | pytest.Collector) -> dict[str, Any]:
    """Keyword options of the `tgi` markers on a test, the closest marker winning."""
    options: dict[str, Any] = {}
    for mark in reversed(list(node.iter_markers("tgi"))):
        if mark.args:
            raise pytest.UsageError(f"@pytest.mark.tgi takes keyword options only, got {mark.args!r}")
        options.update(mark.kwargs)
    return options


def _wants_a_server(config: pytest.Config) -> bool:
    """Whether the command line asked for a real (or external) server rather than the emulator."""
    return any(config.getoption(name) for name in ("tgi_url", "tgi_image", "tgi_variant"))


@pytest.fixture
def tgi_emulator(request: pytest.FixtureRequest) -> Iterator[TGIEmulator]:
    """An in-process TGI emulator on a free loopback port, configured by `@pytest.mark.tgi(...)`."""
    from zephyr_tgi.testing import TGIEmulator

    emulator = TGIEmulator(**_emulator_options(request.node)).start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def tgi_server(pytestconfig: pytest.Config) -> Iterator[TGIServer | ExternalTGIServer]:
    """A ready TGI server for the whole session (see the module docstring for the options)."""
    api_key: str | None = pytestconfig.getoption("tgi_api_key")
    timeout = _startup_timeout(pytestconfig)
    url: str | None = pytestconfig.getoption("tgi_url")
    if url:
        external = ExternalTGIServer(url.rstrip("/"), api_key=api_key)
        with external.client() as client:
            client.wait_until_ready(timeout=timeout)
        yield external
        return

    from zephyr_tgi._launcher.args import DEFAULT_IMAGE, parse_gpus
    from zephyr_tgi._launcher.server import TGIServer

    variant: str | None = pytestconfig.getoption("tgi_variant")
    image: str = (
        pytestconfig.getoption("tgi_image")
        or (DEFAULT_IMAGE if variant else "")
        or str(pytestconfig.getini("tgi_image"))
        or EMULATOR_IMAGE
    )
    gpus_option: str | None = pytestconfig.getoption("tgi_gpus")
    gpus = parse_gpus(gpus_option) if gpus_option is not None else (None if _is_emulator(image) else "all")
    with TGIServer(variant or "main", image=image, gpus=gpus, api_key=api_key, startup_timeout=timeout) as server:
        yield server


@pytest.fixture
def zephyr_client(request: pytest.FixtureRequest) -> Iterator[ZephyrClient]:
    """A `ZephyrClient` for the test's TGI server (the emulator unless a server option was given)."""
    with _target(request).client() as client:
        yield client


def _is_emulator(image: str) -> bool:
    return "zephyr-tgi-emulator" in image


def _startup_timeout(config: pytest.Config) -> float:
    option: float | None = config.getoption("tgi_startup_timeout")
    if option is not None:
        return option
    ini = str(config.getini("tgi_startup_timeout")).strip()
    return float(ini) if ini else 1800.0


def _target(request: pytest.FixtureRequest) -> TGIServer | ExternalTGIServer:
    """The server a client fixture talks to; the test's own `tgi_emulator` wins over any option."""
    if "tgi_emulator" in request.fixturenames or not _wants_a_server(request.config):
        emulator = request.getfixturevalue("tgi_emulator")
        return ExternalTGIServer(emulator.url, api_key=_emulator_options(request.node).get("api_key"))
    server: TGIServer | ExternalTGIServer = request.getfixturevalue("tgi_server")
    return server


def _async_client_fixture() -> Any:
    """The `async_zephyr_client` fixture: an async fixture when pytest-asyncio (its event loop) is there."""
    try:
        import pytest_asyncio
    except ImportError:  # pragma: no cover - exercised only where pytest-asyncio is missing

        @pytest.fixture(name="async_zephyr_client")
        def needs_pytest_asyncio() -> AsyncZephyrClient:
            """An `AsyncZephyrClient`; this stand-in only explains that pytest-asyncio is needed."""
            raise pytest.UsageError("the async_zephyr_client fixture needs pytest-asyncio: pip install pytest-asyncio")

        return needs_pytest_asyncio

    @pytest_asyncio.fixture
    async def async_zephyr_client(request: pytest.FixtureRequest) -> AsyncIterator[AsyncZephyrClient]:
        """An `AsyncZephyrClient` for the test's TGI server (the emulator unless a server option was given)."""
        async with _target(request).async_client() as client:
            yield client

    return async_zephyr_client


async_zephyr_client = _async_client_fixture()
