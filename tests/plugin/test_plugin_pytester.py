"""The pytest plugin as a user's test suite sees it, run through pytester."""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import docker
import docker.errors
import pytest
import requests.exceptions

from tests.conftest import docker_unavailable
from zephyr_tgi._launcher.args import LABEL_CREATOR, current_creator
from zephyr_tgi.testing import TGIEmulator
from zephyr_tgi.testing._plugin import EMULATOR_IMAGE

pytest_plugins = ["pytester"]

# pytester's in-process runs drop the modules first imported inside them. httpx2 imports httpcore2 lazily, so
# without this a second inner run would raise exceptions of a re-imported httpcore2 that httpx2's mapping no
# longer recognises. Importing it here keeps one copy for the whole process, as in any real program.
importlib.import_module("httpcore2")


@pytest.fixture(autouse=True)
def user_ini(pytester: pytest.Pytester) -> None:
    """A user's minimal configuration (pytest-asyncio warns when its loop scope is left unset)."""
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")


def test_the_options_show_in_help(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(
        [
            "*zephyr-tgi*",
            "*--tgi-url=URL*",
            "*--tgi-image=IMAGE*",
            "*--tgi-variant=BRANCH*",
            "*--tgi-gpus=GPUS*",
            "*--tgi-api-key=KEY*",
            "*--tgi-startup-timeout=SECONDS*",
            "*tgi_image (string)*",
        ]
    )


def test_the_tgi_marker_is_documented(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.tgi(**options): the test talks to a TGI server*"])


def test_the_fixtures_are_listed(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--fixtures")
    result.stdout.fnmatch_lines(
        ["tgi_emulator -- *", "tgi_server [[]session scope[]] -- *", "zephyr_client -- *", "async_zephyr_client -- *"]
    )


def test_a_user_test_chats_with_the_in_process_emulator(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_chat(tgi_emulator, zephyr_client):
            assert zephyr_client.base_url == tgi_emulator.url
            assert zephyr_client.chat("Hi").text
            assert tgi_emulator.stats.requests_total >= 1
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_zephyr_client_alone_gets_a_fresh_emulator_per_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        urls = []

        def test_one(zephyr_client):
            urls.append(zephyr_client.base_url)
            assert zephyr_client.generate("Hello").text

        def test_two(zephyr_client):
            urls.append(zephyr_client.base_url)
            assert urls[0] != urls[1]
        """
    )
    pytester.runpytest().assert_outcomes(passed=2)


def test_the_marker_configures_the_emulator_and_the_client_gets_its_key(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from zephyr_tgi import AuthenticationError, ZephyrClient

        @pytest.mark.tgi(api_key="s3cret", max_total_tokens=2048, max_input_tokens=1024)
        def test_keyed(tgi_emulator, zephyr_client):
            assert zephyr_client.generate("Hi").text
            assert zephyr_client.info().max_total_tokens == 2048
            with ZephyrClient(tgi_emulator.url) as keyless, pytest.raises(AuthenticationError):
                keyless.generate("Hi")
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_the_marker_picks_the_engine_the_emulator_speaks(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("engine", ["tgi", "vllm", "sglang"])
        def test_each_engine(engine, request):
            request.applymarker(pytest.mark.tgi(engine=engine))
            emulator = request.getfixturevalue("tgi_emulator")
            client = request.getfixturevalue("zephyr_client")
            assert emulator.engine == engine
            assert client.chat("Hi", max_new_tokens=4).text
            assert client.engine == engine
        """
    )
    pytester.runpytest().assert_outcomes(passed=3)


def test_the_async_client_fixture_works_with_pytest_asyncio(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.asyncio
        async def test_async_chat(async_zephyr_client):
            result = await async_zephyr_client.chat("Hi")
            assert result.text
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_tests_using_the_fixtures_are_marked_tgi_and_can_be_deselected(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_uses_tgi(zephyr_client):
            pass

        def test_plain():
            pass
        """
    )
    result = pytester.runpytest("-m", "not tgi")
    result.assert_outcomes(passed=1, deselected=1)


def test_marker_positional_arguments_are_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.tgi("oops")
        def test_bad(tgi_emulator):
            pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*keyword options only*"])


@pytest.fixture
def outside_server() -> Iterator[TGIEmulator]:
    """A server the inner test session knows only by its URL (as if started by compose or by hand)."""
    with TGIEmulator(api_key="outer-key") as emulator:
        yield emulator


def test_tgi_url_points_tgi_server_and_clients_at_an_existing_server(
    pytester: pytest.Pytester, outside_server: TGIEmulator
) -> None:
    pytester.makepyfile(
        f"""
        def test_external(tgi_server, zephyr_client):
            assert tgi_server.url == "{outside_server.url}"
            assert zephyr_client.base_url == "{outside_server.url}"
            assert zephyr_client.chat("Hi").text
            with tgi_server.client() as client:
                assert client.generate("Hello").text
        """
    )
    result = pytester.runpytest("--tgi-url", outside_server.url, "--tgi-api-key", "outer-key")
    result.assert_outcomes(passed=1)
    assert outside_server.stats.requests_by_route  # the inner session really talked to it


def test_a_test_that_asks_for_tgi_emulator_keeps_it_even_with_tgi_url(
    pytester: pytest.Pytester, outside_server: TGIEmulator
) -> None:
    pytester.makepyfile(
        """
        def test_fault_knobs_need_the_in_process_emulator(tgi_emulator, zephyr_client):
            assert zephyr_client.base_url == tgi_emulator.url
        """
    )
    pytester.runpytest("--tgi-url", outside_server.url).assert_outcomes(passed=1)


# -- tgi_server as a container (needs Docker and the emulator image) ------------------------------------------


@pytest.fixture(scope="module")
def emulator_image_on_docker() -> Iterator[str]:
    """The emulator image name once Docker and the image are known to be there (else skip, or fail in CI)."""

    import docker
    import docker.errors

    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        docker_unavailable(f"Docker daemon not reachable: {exc}")
    try:
        client.images.get(EMULATOR_IMAGE)
    except docker.errors.ImageNotFound:
        docker_unavailable(f"image {EMULATOR_IMAGE} not built: run docker/emulator/build.sh")
    ours: dict[str, str | list[str] | bool] = {"label": f"{LABEL_CREATOR}={current_creator()}"}
    before = {c.id for c in client.containers.list(all=True, filters=ours)}
    yield EMULATOR_IMAGE
    after = {c.id for c in client.containers.list(all=True, filters=ours)}
    client.close()
    assert after <= before, "the inner sessions left zephyr_tgi containers behind"


@pytest.mark.docker
def test_tgi_server_is_an_emulator_container_by_default(
    pytester: pytest.Pytester, emulator_image_on_docker: str
) -> None:
    pytester.makepyfile(
        """
        from zephyr_tgi._launcher.server import TGIServer

        def test_container(tgi_server):
            assert isinstance(tgi_server, TGIServer)
            assert tgi_server.config.image == "zephyr-tgi-emulator:latest"
            assert tgi_server.config.gpus is None
            with tgi_server.client() as client:
                assert client.chat("Hi").text

        def test_same_server_for_the_session(tgi_server, request):
            assert tgi_server.is_ready
        """
    )
    pytester.runpytest().assert_outcomes(passed=2)


@pytest.mark.docker
def test_with_tgi_image_the_clients_talk_to_the_container(
    pytester: pytest.Pytester, emulator_image_on_docker: str
) -> None:
    pytester.makepyfile(
        """
        def test_client_follows_the_server(tgi_server, zephyr_client):
            assert zephyr_client.base_url == tgi_server.url
            assert zephyr_client.generate("Hi").text
        """
    )
    pytester.runpytest("--tgi-image", emulator_image_on_docker, "--tgi-api-key", "pk").assert_outcomes(passed=1)


@pytest.mark.docker
def test_tgi_variant_asks_for_real_tgi_on_the_gpu(pytester: pytest.Pytester, emulator_image_on_docker: str) -> None:
    if any("nvidia" in name for name in docker.from_env().info().get("Runtimes", {})):
        pytest.skip("this Docker host has an NVIDIA runtime: the real image would be pulled and started")
    pytester.makepyfile(
        """
        def test_real(tgi_server):
            pass
        """
    )
    result = pytester.runpytest("--tgi-variant", "gptq-4bit-32g-actorder_True")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*GPUUnavailableError*"])
