"""Every route of the emulator answers with TGI's shapes, headers and status codes."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest

from zephyr_tgi.testing import TGIEmulator, expected_reply

MODEL = "TheBloke/zephyr-7B-alpha-GPTQ"


def _events(body: bytes) -> list[Any]:
    return [
        line[len("data: ") :] if line == "data: [DONE]" else json.loads(line[len("data: ") :])
        for line in body.decode().split("\n\n")
        if line
    ]


@pytest.mark.parametrize("path", ["/health", "/ping", "/"])
def test_health_routes_answer_200_with_an_empty_body(http: httpx2.Client, path: str) -> None:
    response = http.get(path)
    assert (response.status_code, response.content) == (200, b"")


def test_info_lists_every_tgi_field(http: httpx2.Client) -> None:
    info = http.get("/info").json()
    assert info == {
        "model_id": MODEL,
        "model_sha": info["model_sha"],
        "model_pipeline_tag": "text-generation",
        "max_concurrent_requests": 128,
        "max_best_of": 2,
        "max_stop_sequences": 4,
        "max_input_tokens": 3696,
        "max_total_tokens": 4096,
        "validation_workers": 2,
        "max_client_batch_size": 4,
        "router": "text-generation-router",
        "version": "3.3.6-dev0",
        # An official 3.3.7 image: the tag's commit and DOCKER_LABEL=sha-<7 hex> (TGI.md §0, §9).
        "sha": "dfb3fbe78e0d1d69251bd33065591c61bafdfaa8",
        "docker_label": "sha-dfb3fbe",
    }
    assert len(info["model_sha"]) == 40
    int(info["model_sha"], 16)


def test_info_reports_the_configured_limits() -> None:
    with TGIEmulator(model_id="m/x", max_input_tokens=100, max_total_tokens=200, max_best_of=1) as tgi:
        info = httpx2.get(f"{tgi.url}/info", trust_env=False).json()
    assert (info["model_id"], info["max_input_tokens"], info["max_total_tokens"], info["max_best_of"]) == (
        "m/x",
        100,
        200,
        1,
    )


def test_v1_models_lists_the_served_model(http: httpx2.Client) -> None:
    assert http.get("/v1/models").json() == {
        "object": "list",
        "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": MODEL}],
    }


def test_metrics_expose_live_tgi_counters(http: httpx2.Client) -> None:
    http.post("/generate", json={"inputs": "Hi", "parameters": {"max_new_tokens": 3}})
    http.post("/generate", json={"inputs": "Hi", "parameters": {"temperature": 0}})
    text = http.get("/metrics").text
    assert "tgi_request_count 2" in text
    assert "tgi_request_success 1" in text
    assert 'tgi_request_failure{err="validation"} 1' in text
    assert "tgi_request_generated_tokens_count 1" in text
    assert "tgi_request_generated_tokens_sum 3" in text
    assert "tgi_request_input_length_count 1" in text
    assert "tgi_queue_size 0" in text


def test_generate_without_details_returns_only_the_text(http: httpx2.Client) -> None:
    response = http.post("/generate", json={"inputs": "Hello", "parameters": {"max_new_tokens": 1000}})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"generated_text": expected_reply("Hello")}


def test_generate_details_have_tgi_keys_and_omit_empty_lists(http: httpx2.Client) -> None:
    body = http.post("/generate", json={"inputs": "Hello", "parameters": {"details": True, "max_new_tokens": 3}}).json()
    details = body["details"]
    assert list(details) == ["finish_reason", "generated_tokens", "seed", "prefill", "tokens"]
    assert details["finish_reason"] == "length"
    assert details["generated_tokens"] == 3
    assert details["seed"] is None
    assert details["prefill"] == []
    assert [list(token) for token in details["tokens"]] == [["id", "text", "logprob", "special"]] * 3
    assert body["generated_text"] == "".join(token["text"] for token in details["tokens"])


def test_generate_sends_tgi_timing_and_token_headers(http: httpx2.Client) -> None:
    response = http.post("/generate", json={"inputs": "Hello", "parameters": {"max_new_tokens": 4}})
    headers = response.headers
    assert headers["x-compute-type"] == "1-nvidia-a10g"
    assert headers["x-compute-characters"] == "5"
    assert headers["x-prompt-tokens"] == "2"  # BOS + "Hello"
    assert headers["x-generated-tokens"] == "4"
    float(headers["x-compute-time"])
    for name in ("x-total-time", "x-validation-time", "x-queue-time", "x-inference-time", "x-time-per-token"):
        assert headers[name].isdigit()


def test_post_root_returns_a_list_and_echoes_the_prompt_by_default(http: httpx2.Client) -> None:
    body = http.post("/", json={"inputs": "Hello", "parameters": {"max_new_tokens": 1000}}).json()
    assert body == [{"generated_text": "Hello" + expected_reply("Hello")}]


def test_post_root_respects_return_full_text_false(http: httpx2.Client) -> None:
    body = http.post("/", json={"inputs": "Hello", "parameters": {"return_full_text": False}}).json()
    assert body == [{"generated_text": expected_reply("Hello")}]


def test_post_root_streams_when_asked(http: httpx2.Client) -> None:
    response = http.post("/", json={"inputs": "Hello", "stream": True, "parameters": {"max_new_tokens": 2}})
    assert response.headers["content-type"] == "text/event-stream"
    events = _events(response.content)
    assert events[-1]["generated_text"].startswith("Hello")
    assert "[DONE]" not in events


def test_generate_stream_token_events_then_a_final_event(http: httpx2.Client) -> None:
    response = http.post("/generate_stream", json={"inputs": "Hello", "parameters": {"details": True}})
    events = _events(response.content)
    assert [event["index"] for event in events] == list(range(1, len(events) + 1))
    assert all(event["generated_text"] is None and event["details"] is None for event in events[:-1])
    final = events[-1]
    assert final["generated_text"] == expected_reply("Hello")
    assert final["token"] == {"id": 2, "text": "</s>", "logprob": final["token"]["logprob"], "special": True}
    assert final["details"] == {
        "finish_reason": "eos_token",
        "generated_tokens": len(events),
        "seed": None,
        "input_length": 2,
    }


def test_generate_stream_headers(http: httpx2.Client) -> None:
    with http.stream("POST", "/generate_stream", json={"inputs": "Hello"}) as response:
        headers = response.headers
        response.read()
    assert headers["content-type"] == "text/event-stream"
    assert headers["cache-control"] == "no-cache"
    assert headers["x-accel-buffering"] == "no"
    assert headers["x-compute-type"] == "1-nvidia-a10g"
    assert headers["x-compute-characters"] == "5"
    assert headers["transfer-encoding"] == "chunked"
    assert "content-length" not in headers


def test_chat_completion_shape(http: httpx2.Client) -> None:
    body = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}]}).json()
    prompt = "<|user|>\nHi</s>\n<|assistant|>\n"
    assert body == {
        "object": "chat.completion",
        "id": "",
        "created": body["created"],
        "model": MODEL,
        "system_fingerprint": "3.3.6-dev0-sha-dfb3fbe",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": expected_reply(prompt)},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": body["usage"],
    }
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_chat_echoes_a_requested_model_other_than_tgi(http: httpx2.Client) -> None:
    messages = [{"role": "user", "content": "Hi"}]
    assert http.post("/v1/chat/completions", json={"messages": messages, "model": "tgi"}).json()["model"] == MODEL
    assert http.post("/v1/chat/completions", json={"messages": messages, "model": "mine"}).json()["model"] == "mine"


def test_chat_prompt_tokens_carry_no_bos(http: httpx2.Client) -> None:
    messages = [{"role": "user", "content": "Hi"}]
    tokenized = http.post("/chat_tokenize", json={"messages": messages}).json()
    usage = http.post("/v1/chat/completions", json={"messages": messages}).json()["usage"]
    assert usage["prompt_tokens"] == len(tokenized["tokenize_response"])


def test_chat_logprobs_list_every_token(http: httpx2.Client) -> None:
    body = http.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "Hi"}], "logprobs": True, "top_logprobs": 2, "max_tokens": 3},
    ).json()
    content = body["choices"][0]["logprobs"]["content"]
    assert len(content) == 3
    assert all(len(entry["top_logprobs"]) == 2 for entry in content)


def test_chat_stream_chunks_finish_usage_and_done(http: httpx2.Client) -> None:
    response = http.post(
        "/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": "Hi"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    events = _events(response.content)
    assert events[-1] == "[DONE]"
    usage_chunk, finish_chunk, chunks = events[-2], events[-3], events[:-3]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in [*chunks, finish_chunk, usage_chunk])
    assert all(chunk["choices"][0]["finish_reason"] is None for chunk in chunks)
    assert all(chunk["usage"] is None for chunk in [*chunks, finish_chunk])
    assert finish_chunk["choices"][0] == {
        "index": 0,
        "delta": {"role": "assistant", "content": ""},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == len(chunks) + 1
    text = "".join(chunk["choices"][0]["delta"]["content"] for chunk in chunks)
    assert text == expected_reply("<|user|>\nHi</s>\n<|assistant|>\n")


def test_completions_for_several_prompts(http: httpx2.Client) -> None:
    body = http.post("/v1/completions", json={"prompt": ["a", "b"], "max_tokens": 2}).json()
    assert body["object"] == "text_completion"
    assert [choice["index"] for choice in body["choices"]] == [0, 1]
    assert all(choice["finish_reason"] == "length" for choice in body["choices"])
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8}


def test_completions_stream_interleaves_prompts_and_ends_with_done(http: httpx2.Client) -> None:
    response = http.post("/v1/completions", json={"prompt": ["a", "b"], "max_tokens": 2, "stream": True})
    events = _events(response.content)
    assert events[-1] == "[DONE]"
    assert [event["choices"][0]["index"] for event in events[:-1]] == [0, 1, 0, 1]
    assert [event["choices"][0]["finish_reason"] for event in events[:-1]] == ["", "", "length", "length"]
    assert "usage" in events[2]
    assert "usage" not in events[0]


def test_completions_reject_a_suffix(http: httpx2.Client) -> None:
    response = http.post("/v1/completions", json={"prompt": "a", "suffix": "b"})
    assert response.status_code == 422
    assert response.json() == {
        "error": "Suffix is not supported and can be achieved by preprocessing the prompt.",
        "error_type": "suffix not supported",
    }


def test_completions_reject_too_many_prompts(http: httpx2.Client) -> None:
    response = http.post("/v1/completions", json={"prompt": ["a"] * 5})
    assert response.status_code == 422
    assert response.json() == {
        "error": "Number of prompts exceeds the maximum allowed batch size of 4",
        "error_type": "batch size exceeded",
    }


def test_tokenize_returns_spans_with_an_empty_bos_first(http: httpx2.Client) -> None:
    tokens = http.post("/tokenize", json={"inputs": "Hello world"}).json()
    assert tokens[0] == {"id": 1, "text": "", "start": 0, "stop": 0}
    assert [(t["text"], t["start"], t["stop"]) for t in tokens[1:]] == [("Hello", 0, 5), (" world", 5, 11)]


def test_tokenize_length_equals_the_prompt_tokens_of_generate(http: httpx2.Client) -> None:
    inputs = "Some longer input, with punctuation!"
    tokens = http.post("/tokenize", json={"inputs": inputs}).json()
    generated = http.post("/generate", json={"inputs": inputs, "parameters": {"max_new_tokens": 1}})
    assert len(tokens) == int(generated.headers["x-prompt-tokens"])


def test_chat_tokenize_shows_the_whitespace_safe_zephyr_prompt(http: httpx2.Client) -> None:
    messages = [{"role": "system", "content": ""}, {"role": "user", "content": "Hello world"}]
    body = http.post("/chat_tokenize", json={"messages": messages}).json()
    assert body["templated_text"] == "<|system|>\n</s>\n<|user|>\nHello world</s>\n<|assistant|>\n"
    assert "".join(token["text"] for token in body["tokenize_response"]) == body["templated_text"]


def test_unknown_routes_are_404_with_an_empty_body(http: httpx2.Client) -> None:
    response = http.get("/nope")
    assert (response.status_code, response.content) == (404, b"")


@pytest.mark.parametrize(("method", "path"), [("GET", "/generate"), ("POST", "/info"), ("PUT", "/")])
def test_a_wrong_method_is_405(http: httpx2.Client, method: str, path: str) -> None:
    response = http.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"]


def test_requests_are_counted_by_route(http: httpx2.Client, tgi: TGIEmulator) -> None:
    for _ in range(5):
        http.post("/generate", json={"inputs": "x", "parameters": {"max_new_tokens": 1}})
        http.post("/generate_stream", json={"inputs": "x", "parameters": {"max_new_tokens": 2}})
    assert tgi.stats.requests_by_route == {"/generate": 5, "/generate_stream": 5}
