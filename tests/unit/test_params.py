"""SamplingParams: TGI's validation rules client-side, quirks smoothed, layers merged, wire format."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from zephyr_tgi import PRESETS, ConfigurationError, Grammar, SamplingParams
from zephyr_tgi._client.params import Limits, check_limits, merge_params, to_wire


@pytest.mark.parametrize(
    "bad",
    [
        {"temperature": -0.1},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"typical_p": 0.0},
        {"top_k": 0},
        {"repetition_penalty": 0.0},
        {"frequency_penalty": 2.5},
        {"frequency_penalty": -2.01},
        {"max_new_tokens": 0},
        {"truncate": 0},
        {"seed": -1},
        {"seed": 2**64},
        {"top_n_tokens": -1},
        {"best_of": 0},
        {"stop": [""]},
        {"best_of": 2},
        {"best_of": 2, "do_sample": True, "seed": 1},
        {"unknown": 1},
    ],
)
def test_values_tgi_rejects_are_refused_before_sending(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        SamplingParams(**bad)


def test_the_models_are_frozen() -> None:
    params = SamplingParams(temperature=0.5)
    with pytest.raises(ValidationError, match="frozen"):
        params.temperature = 1.0  # type: ignore[misc]


def test_best_of_needs_sampling_with_tgis_wording() -> None:
    with pytest.raises(ConfigurationError, match="you must use sampling when `best_of` is > 1"):
        SamplingParams(best_of=2, temperature=0)
    assert SamplingParams(best_of=2, do_sample=True).best_of == 2


def test_temperature_zero_means_greedy_and_drops_every_sampling_knob() -> None:
    wire = to_wire(SamplingParams(temperature=0, top_k=5, top_p=0.9, typical_p=0.5))
    assert wire["do_sample"] is False
    assert not {"temperature", "top_k", "top_p", "typical_p"} & wire.keys()


@pytest.mark.parametrize("name", ["top_p", "typical_p"])
def test_one_point_zero_means_off_and_is_not_sent(name: str) -> None:
    assert name not in to_wire(SamplingParams(**{name: 1.0}))
    assert to_wire(SamplingParams(**{name: 0.9}))[name] == 0.9


def test_eos_is_always_a_stop_sequence_and_details_are_requested() -> None:
    wire = to_wire(SamplingParams(stop=["\nUser:", "</s>", "\nUser:"]))
    assert wire["stop"] == ["\nUser:", "</s>"]
    assert wire["details"] is True
    assert to_wire(SamplingParams())["stop"] == ["</s>"]


def test_an_empty_params_object_still_sends_parameters_so_sampling_stays_off() -> None:
    wire = to_wire(SamplingParams())
    assert "do_sample" not in wire  # TGI defaults do_sample to false when `parameters` is present
    assert wire == {"details": True, "stop": ["</s>"]}


def test_presets_match_the_model_cards() -> None:
    card = SamplingParams.preset("model_card")
    assert (card.temperature, card.top_p, card.top_k, card.repetition_penalty, card.max_new_tokens) == (
        0.7,
        0.95,
        40,
        1.1,
        512,
    )
    zephyr = PRESETS["zephyr_card"]
    assert (zephyr.temperature, zephyr.top_k, zephyr.top_p, zephyr.max_new_tokens) == (0.7, 50, 0.95, 256)
    assert SamplingParams.preset("greedy").greedy
    with pytest.raises(ConfigurationError, match="unknown preset"):
        SamplingParams.preset("creative")  # type: ignore[arg-type]


def test_layers_merge_client_then_call_then_keywords() -> None:
    client = SamplingParams(temperature=0.7, max_new_tokens=100, top_k=10)
    call = SamplingParams(max_new_tokens=20)
    merged = merge_params(client, call, {"top_k": 3})
    assert (merged.temperature, merged.max_new_tokens, merged.top_k) == (0.7, 20, 3)


def test_unset_fields_of_a_later_layer_do_not_erase_earlier_ones() -> None:
    merged = merge_params(SamplingParams(seed=5), SamplingParams(top_k=2))
    assert merged.seed == 5


def test_bad_keyword_overrides_are_configuration_errors_naming_the_field() -> None:
    with pytest.raises(ConfigurationError, match="temperature"):
        merge_params(SamplingParams(), {"temperature": -1})
    with pytest.raises(ConfigurationError, match="max_tokens"):
        merge_params(SamplingParams(), {"max_tokens": 3})


def test_server_limits_are_checked_with_tgis_messages() -> None:
    limits = Limits(max_stop_sequences=4, max_best_of=2, max_top_n_tokens=5, max_total_tokens=4096)
    with pytest.raises(ConfigurationError, match=r"supports up to 4 stop sequences\. Given: 5"):
        check_limits(SamplingParams(stop=["a", "b", "c", "d"]), limits, stream=False)
    with pytest.raises(ConfigurationError, match=r"`best_of` must be > 0 and <= 2\. Given: 3"):
        check_limits(SamplingParams(best_of=3, do_sample=True), limits, stream=False)
    with pytest.raises(ConfigurationError, match="not supported when streaming"):
        check_limits(SamplingParams(best_of=2, do_sample=True), limits, stream=True)
    with pytest.raises(ConfigurationError, match="decoder_input_details"):
        check_limits(SamplingParams(decoder_input_details=True), limits, stream=True)
    with pytest.raises(ConfigurationError, match="top_n_tokens"):
        check_limits(SamplingParams(top_n_tokens=6), limits, stream=False)
    check_limits(SamplingParams(stop=["a", "b", "c"], best_of=2, do_sample=True), limits, stream=False)


def test_a_max_new_tokens_beyond_the_window_passes_the_limits_as_tgi_accepts_it() -> None:
    # TGI >= 3.1.1 checks input + min(max_new_tokens, 1024) and stops at the window; the budget decides the rest.
    check_limits(SamplingParams(max_new_tokens=5000), Limits(max_total_tokens=4096), stream=False)


class Answer(BaseModel):
    name: str
    age: int


def test_grammar_from_a_pydantic_model_is_a_json_grammar() -> None:
    grammar = Grammar.json_schema(Answer)
    assert grammar.type == "json"
    assert set(grammar.value["properties"]) == {"name", "age"}
    assert to_wire(SamplingParams(grammar=grammar))["grammar"]["type"] == "json"


@pytest.mark.parametrize(
    ("kind", "value"),
    [("json", {"type": "object"}), ("json", "[1]"), ("regex", ""), ("json_schema", {"name": "x"})],
)
def test_grammars_tgi_rejects_are_refused(kind: str, value: Any) -> None:
    with pytest.raises(ConfigurationError):
        Grammar(type=kind, value=value)


_any_value = st.one_of(st.none(), st.integers(-5, 10), st.floats(-3, 3, allow_nan=False), st.booleans())


@given(
    temperature=_any_value,
    top_p=_any_value,
    top_k=_any_value,
    typical_p=_any_value,
    repetition_penalty=_any_value,
    frequency_penalty=_any_value,
    max_new_tokens=_any_value,
)
def test_any_input_is_either_rejected_or_wire_values_are_in_tgis_ranges(**fields: Any) -> None:
    given_fields = {k: v for k, v in fields.items() if v is not None}
    try:
        built: SamplingParams | ConfigurationError = SamplingParams(**given_fields)
    except ConfigurationError as refused:
        built = refused
    if isinstance(built, ConfigurationError):
        assert isinstance(built.__cause__, ValidationError)
        event("refused")
        return  # refusal is one of the two outcomes this property allows
    event("accepted")
    wire = to_wire(built)
    assert wire.get("temperature", 1) > 0
    assert 0 < wire.get("top_p", 0.5) < 1
    assert 0 < wire.get("typical_p", 0.5) < 1
    assert wire.get("top_k", 1) > 0
    assert wire.get("repetition_penalty", 1) > 0
    assert -2 <= wire.get("frequency_penalty", 0) <= 2
    assert wire.get("max_new_tokens", 1) > 0
