"""perplexity() and tokenize() on every engine: the same numbers and spans as on TGI, over real loopback HTTP.

vLLM scores with `prompt_logprobs` on `/v1/completions`, SGLang with `return_logprob` on its native `/generate`;
vLLM's `/tokenize` gives pieces (`return_token_strs`), SGLang's ids only (then `/v1/detokenize`). Each test runs
for each engine and each client (sync and async).
"""

from __future__ import annotations

import importlib.resources
import json
import math
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.http.conftest import Twin
from zephyr_tgi import (
    ConfigurationError,
    PrefillUnavailableError,
    ZephyrClient,
    ZephyrTokenizer,
)
from zephyr_tgi.testing import ScriptedResponse, SentencePieceTokenizer, TGIEmulator

MODEL = Path(str(importlib.resources.files("mistral_common") / "data" / "tokenizer.model.v1"))
ENGINES = ("tgi", "vllm", "sglang")
_SCORING = {"tgi": "/generate", "vllm": "/v1/completions", "sglang": "/generate"}
TEXT = "Zephyr is a fine-tuned version of Mistral. Ça coûte 5 € — 日本語 😀 ok\n\tdone </s> after"


def _emulator(engine: str, **options: object) -> TGIEmulator:
    if engine == "tgi":
        options.setdefault("enable_prefill_logprobs", True)
    return TGIEmulator(engine=engine, tokenizer=SentencePieceTokenizer(MODEL), **options)  # type: ignore[arg-type]


@pytest.fixture(params=ENGINES)
def dialect(request: pytest.FixtureRequest) -> Iterator[TGIEmulator]:
    """An emulator speaking one engine's API, with Zephyr's tokenizer (TGI's with prefill logprobs on)."""
    with _emulator(request.param) as server:
        yield server


@pytest.fixture(scope="module")
def reference() -> Iterator[ZephyrClient]:
    """A client of the TGI dialect: what every engine must match."""
    with _emulator("tgi") as server, ZephyrClient(server.url) as client:
        yield client


@pytest.fixture
async def client(kind: str, dialect: TGIEmulator) -> AsyncIterator[Twin]:
    twin = Twin(kind, dialect.url)
    yield twin
    await twin.close()


def _scoring_requests(emulator: TGIEmulator) -> list[dict[str, object]]:
    path = _SCORING[emulator.engine]
    return [r.json for r in emulator.stats.requests if r.path == path]


# --- perplexity --------------------------------------------------------------------------------------------


async def test_perplexity_is_the_same_number_on_every_engine(
    client: Twin, dialect: TGIEmulator, reference: ZephyrClient
) -> None:
    ppl = await client.call("perplexity", TEXT)
    assert ppl == reference.perplexity(TEXT)
    [sent] = _scoring_requests(dialect)
    if dialect.engine == "vllm":
        assert (sent["prompt_logprobs"], sent["max_tokens"], sent["return_token_ids"]) == (0, 1, True)
    elif dialect.engine == "sglang":
        assert (sent["return_logprob"], sent["logprob_start_len"]) == (True, 0)
        assert sent["sampling_params"] == {"max_new_tokens": 1, "temperature": 0.0}
    else:
        assert sent["parameters"]["decoder_input_details"] is True  # type: ignore[index]


def test_perplexity_is_exp_of_the_mean_negative_prompt_logprob(dialect: TGIEmulator) -> None:
    text = "Zephyr is a fine-tuned version of Mistral."
    with ZephyrClient(dialect.url) as client:
        ppl = client.perplexity(text)
    body = {"prompt": text, "max_tokens": 1, "prompt_logprobs": 0, "return_token_ids": True}
    if dialect.engine == "vllm":
        answer = httpx.post(f"{dialect.url}/v1/completions", json=body).json()["choices"][0]
        entries = answer["prompt_logprobs"]
        assert entries[0] is None
        pairs = zip(entries[1:], answer["prompt_token_ids"][1:], strict=True)
        logprobs = [entry[str(token_id)]["logprob"] for entry, token_id in pairs]
    elif dialect.engine == "sglang":
        native = {
            "text": text,
            "sampling_params": {"max_new_tokens": 1},
            "return_logprob": True,
            "logprob_start_len": 0,
        }
        entries = httpx.post(f"{dialect.url}/generate", json=native).json()["meta_info"]["input_token_logprobs"]
        assert entries[0][:2] == [None, 1]  # BOS, predicted by nothing
        logprobs = [entry[0] for entry in entries[1:]]
    else:
        parameters = {"max_new_tokens": 1, "decoder_input_details": True}
        prefill = httpx.post(f"{dialect.url}/generate", json={"inputs": text, "parameters": parameters}).json()
        logprobs = [token["logprob"] for token in prefill["details"]["prefill"][1:]]
    assert ppl == pytest.approx(math.exp(-sum(logprobs) / len(logprobs)))


@pytest.mark.parametrize("engine", ENGINES)
async def test_long_texts_are_scored_in_the_same_windows_on_every_engine(kind: str, engine: str) -> None:
    tokenizer = ZephyrTokenizer.from_file(MODEL)
    text = " ".join(f"word{i}" for i in range(60))
    n_tokens = tokenizer.count(text, add_bos=False)
    results = {}
    for name in ("tgi", engine):
        # The same window everywhere: TGI's max_input_tokens, the others' max_model_len - 1.
        with _emulator(name, max_input_tokens=41, max_total_tokens=42) as server:
            twin = Twin(kind, server.url)  # no local tokenizer: the spans come from the engine's tokenize
            results[name] = await twin.call("perplexity", text, stride=20)
            await twin.close()
            requests = _scoring_requests(server)
        assert len(requests) == math.ceil((n_tokens - 39) / 20) + 1  # windows of 41 - 2 tokens
    assert results[engine] == results["tgi"]


@pytest.mark.parametrize("engine", ENGINES)
async def test_windows_of_a_non_ascii_text_are_cut_where_its_tokens_are(kind: str, engine: str) -> None:
    # The server's spans count UTF-8 bytes; the windows are cut out of the text in characters.
    text = " ".join(f"café{i} — naïve 日本" for i in range(40))
    with _emulator(engine, max_input_tokens=41, max_total_tokens=42) as server:
        spans_from_server = Twin(kind, server.url)
        local = Twin(kind, server.url, tokenizer=ZephyrTokenizer.from_file(MODEL))
        try:
            assert await spans_from_server.call("perplexity", text, stride=20) == await local.call(
                "perplexity", text, stride=20
            )
        finally:
            await spans_from_server.close()
            await local.close()
        prompts = [r.get("inputs") or r.get("prompt") or r.get("text") for r in _scoring_requests(server)]
    half = len(prompts) // 2
    assert prompts[:half] == prompts[half:]  # the same windows both ways


async def test_a_server_that_ignored_the_prompt_logprobs_request_fails_loudly(
    client: Twin, dialect: TGIEmulator
) -> None:
    await client.call("info")  # identified first: the scripted answer is for the scoring request
    body = {
        "tgi": {"generated_text": "x", "details": {"finish_reason": "length", "generated_tokens": 1, "prefill": []}},
        "vllm": {"choices": [{"index": 0, "text": "x", "finish_reason": "length"}]},  # no prompt_logprobs
        "sglang": {"text": "x", "meta_info": {"prompt_tokens": 3}},  # no input_token_logprobs
    }[dialect.engine]
    answer = ScriptedResponse(status=200, body=json.dumps(body), content_type="application/json")
    dialect.set_faults(scripted_responses=[answer])
    hint = {"tgi": "--enable-prefill-logprobs", "vllm": "without prompt_logprobs", "sglang": "input_token_logprobs"}
    with pytest.raises(PrefillUnavailableError, match=hint[dialect.engine]):
        await client.call("perplexity", "Some text to score.")


async def test_generate_with_decoder_input_details_gives_the_prefill_on_vllm_and_is_refused_on_sglang(
    client: Twin, dialect: TGIEmulator
) -> None:
    await client.call("info")
    if dialect.engine == "sglang":
        with pytest.raises(ConfigurationError, match="decoder_input_details=True is not supported on SGLang"):
            await client.call("generate", "Hello world", max_new_tokens=1, decoder_input_details=True)
        return
    result = await client.call("generate", "Hello world", max_new_tokens=1, decoder_input_details=True)
    assert [token.id for token in result.prefill] == [1, 22557, 1526]  # BOS, ▁Hello, ▁world
    assert result.prefill[0].logprob is None
    assert all(token.logprob is not None and token.logprob < 0 for token in result.prefill[1:])


# --- what the dialects validate, as the engines do ----------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"prompt_logprobs": 21}, "Requested prompt logprobs of 21, which is greater than max allowed: 20"),
        ({"prompt_logprobs": -1}, "Requested prompt logprobs of 32000, which is greater than max allowed: 20"),
        ({"prompt_logprobs": -2}, "`prompt_logprobs` must be a positive value or -1."),
        ({"prompt_logprobs": "3"}, "`prompt_logprobs` must be an integer."),
        ({"prompt_logprobs": 1, "stream": True}, "`prompt_logprobs` are not available when `stream=True`."),
    ],
)
def test_the_vllm_dialect_checks_prompt_logprobs_as_vllm_does(extra: dict[str, object], message: str) -> None:
    with TGIEmulator(engine="vllm") as server:
        response = httpx.post(f"{server.url}/v1/completions", json={"prompt": "Hi", "max_tokens": 1, **extra})
    assert response.status_code == 400
    error = response.json()["error"]
    assert message in error["message"]
    assert error["code"] == 400


def test_the_vllm_dialect_lists_alternatives_below_each_prompt_token() -> None:
    with TGIEmulator(engine="vllm") as server:
        body = {"prompt": "Hello world", "max_tokens": 1, "prompt_logprobs": 2, "return_token_ids": True}
        choice = httpx.post(f"{server.url}/v1/completions", json=body).json()["choices"][0]
    assert choice["prompt_logprobs"][0] is None
    for entry, token_id in zip(choice["prompt_logprobs"][1:], choice["prompt_token_ids"][1:], strict=True):
        chosen = entry[str(token_id)]
        assert chosen["rank"] == 1
        assert len(entry) == 3
        assert all(other["logprob"] < chosen["logprob"] for key, other in entry.items() if key != str(token_id))


def test_the_sglang_dialect_answers_native_errors_in_its_own_shape() -> None:
    with TGIEmulator(engine="sglang") as server:
        too_far = {"text": "Hi there", "return_logprob": True, "logprob_start_len": 50}
        response = httpx.post(f"{server.url}/generate", json=too_far)
        assert response.status_code == 400
        assert "logprob_start_len=50 is higher than the number of input tokens" in response.json()["error"]["message"]
        response = httpx.post(f"{server.url}/generate", json={"sampling_params": {}})
        assert response.status_code == 400
        assert response.json() == {"error": {"message": "Either text, input_ids or input_embeds should be provided."}}


# --- tokenize ----------------------------------------------------------------------------------------------


async def test_tokenize_gives_tgis_spans_on_every_engine(
    client: Twin, dialect: TGIEmulator, reference: ZephyrClient
) -> None:
    spans = await client.call("tokenize", TEXT)
    assert spans == reference.tokenize(TEXT)
    assert (spans[0].id, spans[0].start, spans[0].stop) == (1, 0, 0)  # BOS, as TGI shows it
    routes = [r.path for r in dialect.stats.requests if "tokenize" in r.path]
    assert (
        routes
        == {"tgi": ["/tokenize"], "vllm": ["/tokenize"], "sglang": ["/v1/tokenize", "/v1/detokenize"]}[dialect.engine]
    )
    if dialect.engine == "vllm":
        [sent] = [r.json for r in dialect.stats.requests if r.path == "/tokenize"]
        assert sent == {"prompt": TEXT, "add_special_tokens": True, "return_token_strs": True}


_PIECES = [*"abcXYZ019 .,!?'\n\t", "  ", "é", "€", "日本", "😀", "ñ", "<s>", "</s>", "\u00a0", "ÿ", "Hello", " world"]
_TEXTS = st.lists(st.sampled_from(_PIECES), max_size=30).map("".join)


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_tokenize_matches_tgi_for_generated_texts(engine: str, reference: ZephyrClient) -> None:
    with _emulator(engine) as server, ZephyrClient(server.url) as client:

        @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(_TEXTS)
        def check(text: str) -> None:
            assert client.tokenize(text) == reference.tokenize(text)

        check()


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_tokenize_matches_tgi_with_the_emulators_builtin_tokenizer(engine: str) -> None:
    texts = ["Hello world, 3 dogs!", " leading space", "two  spaces", "tabs\tand\nlines", "</s>after", "é€😀"]
    with (
        TGIEmulator() as tgi,
        TGIEmulator(engine=engine) as other,
        ZephyrClient(tgi.url) as expected,
        ZephyrClient(other.url) as client,
    ):
        for text in texts:
            assert client.tokenize(text) == expected.tokenize(text)
