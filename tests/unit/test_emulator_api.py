"""The public surface of zephyr_tgi.testing and the plain-data pieces behind it."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

import zephyr_tgi.testing as testing
from zephyr_tgi.testing import EmulatorStats, Faults, RecordedRequest, ScriptedResponse, TGIEmulator
from zephyr_tgi.testing._faults import _FIELD_TYPES, FaultState, check_fault_changes, faults_changes_from_json


def test_all_is_sorted_complete_and_public() -> None:
    names = testing.__all__
    assert names == sorted(names, key=lambda n: (not n.isupper(), n))  # ruff RUF022 order
    assert all(not name.startswith("_") for name in names)
    assert all(hasattr(testing, name) for name in names)
    assert {"TGIEmulator", "Faults", "EmulatorStats", "expected_reply"} <= set(names)
    assert set(names) <= set(dir(testing))


def test_unknown_attributes_still_raise() -> None:
    with pytest.raises(AttributeError):
        testing.NoSuchThing  # noqa: B018


def test_importing_the_package_and_plugin_needs_no_third_party_module() -> None:
    code = (
        "import sys; sys.modules['h11'] = None; before = set(sys.modules); "
        "import zephyr_tgi.testing, zephyr_tgi.testing._plugin; from zephyr_tgi.testing import Faults, expected_reply; "
        "print(sorted({m.split('.')[0] for m in set(sys.modules) - before}))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for third_party in ("h11", "sentencepiece", "pydantic", "httpx2", "huggingface_hub", "jsonschema", "numpy"):
        assert f"'{third_party}'" not in loaded


def test_every_fault_field_has_a_declared_type() -> None:
    assert set(_FIELD_TYPES) == {field.name for field in dataclasses.fields(Faults)}


def test_faults_default_to_off() -> None:
    faults = Faults()
    assert faults.overload_next == faults.drop_before_first_byte_next == faults.stream_error_next == 0
    assert faults.refuse_connections_for == faults.unavailable_for == 0.0
    assert faults.scripted_responses == []
    assert faults.exit_after is None


def test_fault_changes_are_type_checked() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        check_fault_changes({"explode": 1})
    with pytest.raises(ValueError, match="wrong type"):
        check_fault_changes({"overload_next": "2"})
    with pytest.raises(ValueError, match="wrong type"):
        check_fault_changes({"overload_next": True})
    with pytest.raises(ValueError, match="negative"):
        check_fault_changes({"overload_next": -1})
    assert check_fault_changes({"stream_error_streams_only": True}) == {"stream_error_streams_only": True}
    with pytest.raises(ValueError, match="wrong type"):
        check_fault_changes({"stream_error_streams_only": 1})


def test_scripted_responses_may_be_given_as_json_objects() -> None:
    changes = faults_changes_from_json({"scripted_responses": [{"status": 401, "body": ""}]})
    assert changes["scripted_responses"] == [ScriptedResponse(status=401, body="")]


def test_a_malformed_scripted_response_is_rejected() -> None:
    with pytest.raises(ValueError, match="status"):
        faults_changes_from_json({"scripted_responses": [{"status": 9999}]})


def test_counters_are_consumed_one_at_a_time() -> None:
    state = FaultState(Faults(overload_next=2))
    assert [state.take("overload_next") for _ in range(3)] == [True, True, False]


def test_reset_keeps_the_same_faults_object() -> None:
    faults = Faults(overload_next=3, retry_after="1")
    state = FaultState(faults)
    state.reset()
    assert state.faults is faults
    assert faults == Faults()


def test_stats_serialise_to_json_ready_dicts() -> None:
    stats = EmulatorStats(
        requests_total=1, requests=[RecordedRequest("POST", "/generate", {"a": "b"}, {"inputs": "x"})]
    )
    assert stats.to_json()["requests"][0] == {
        "method": "POST",
        "path": "/generate",
        "headers": {"a": "b"},
        "json": {"inputs": "x"},
    }


def test_inconsistent_token_limits_are_rejected() -> None:
    with pytest.raises(ValueError, match="must be <"):
        TGIEmulator(max_input_tokens=10, max_total_tokens=10)


def test_the_port_is_the_requested_one_before_start() -> None:
    assert TGIEmulator(port=0).port == 0
