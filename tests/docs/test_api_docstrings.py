"""Everything the API reference renders documents each of its parameters and fields, so mkdocstrings shows full tables.

The objects checked are the ones docs/api.md renders (`::: path` lines), read the way mkdocstrings reads them:
griffe's static view of the source and its Google-style docstring parser. For a function, its parameters; for a
class, its constructor's (in the class docstring or its `__init__`, wherever in zephyr_tgi that `__init__` is
defined, or a docstring under each field of a dataclass) and its public methods', inherited ones included; for a
pydantic model or a dataclass, each field zephyr_tgi declares (an `Attributes:` entry, a docstring under the
field, or for a dataclass an `Args:` entry). The sync and async twins are documented apart, in the same words.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import griffe
import pytest
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[2]
API_PAGE = ROOT / "docs" / "api.md"
PACKAGE = "zephyr_tgi"

# Sync/async twins whose methods must be documented in identical words.
TWINS = (
    ("zephyr_tgi.ZephyrClient", "zephyr_tgi.AsyncZephyrClient"),
    ("zephyr_tgi.Conversation", "zephyr_tgi.AsyncConversation"),
)


def _package() -> griffe.Module:
    loader = griffe.GriffeLoader(search_paths=[str(ROOT)], docstring_parser=griffe.Parser.google)
    package = loader.load(PACKAGE)
    loader.resolve_aliases(implicit=True, external=False)
    assert isinstance(package, griffe.Module)
    return package


PACKAGE_TREE = _package()


def _target(path: str) -> griffe.Object:
    found = PACKAGE_TREE[path.removeprefix(f"{PACKAGE}.")]
    return found.final_target if isinstance(found, griffe.Alias) else found


def _documented_paths() -> list[str]:
    return re.findall(r"^::: (\S+)$", API_PAGE.read_text(encoding="utf-8"), flags=re.MULTILINE)


def _sections(obj: griffe.Object, *kinds: griffe.DocstringSectionKind) -> set[str]:
    if obj.docstring is None:
        return set()
    names: set[str] = set()
    for section in obj.docstring.parsed:
        if section.kind in kinds:
            names |= {entry.name.lstrip("*") for entry in section.value}
    return names


def _args(obj: griffe.Object) -> set[str]:
    return _sections(obj, griffe.DocstringSectionKind.parameters, griffe.DocstringSectionKind.other_parameters)


def _ours(obj: griffe.Object) -> bool:
    return obj.path.startswith(f"{PACKAGE}.")


def _callables() -> Iterator[tuple[str, griffe.Function, set[str]]]:
    """(label, function, names documented elsewhere) for every callable the reference renders."""
    for path in _documented_paths():
        obj = _target(path)
        if isinstance(obj, griffe.Function):
            yield path, obj, set()
        elif isinstance(obj, griffe.Class):
            init = obj.all_members.get("__init__")
            if init is not None:
                init = init.final_target if isinstance(init, griffe.Alias) else init
                if isinstance(init, griffe.Function) and _ours(init):
                    # A dataclass's fields are its constructor's parameters: a docstring under a field counts.
                    fields = {n for n, m in obj.all_members.items() if m.is_attribute and m.docstring is not None}
                    attributes = _sections(obj, griffe.DocstringSectionKind.attributes)
                    yield f"{path}.__init__", init, _args(obj) | attributes | fields
            for name, member in obj.all_members.items():
                target = member.final_target if isinstance(member, griffe.Alias) else member
                if not name.startswith("_") and isinstance(target, griffe.Function) and _ours(target):
                    yield f"{path}.{name}", target, set()


CALLABLES = sorted(_callables(), key=lambda entry: entry[0])


@pytest.mark.parametrize(("label", "function", "elsewhere"), CALLABLES, ids=[entry[0] for entry in CALLABLES])
def test_every_parameter_has_an_args_entry(label: str, function: griffe.Function, elsewhere: set[str]) -> None:
    wanted = [parameter.name for parameter in function.parameters if parameter.name not in ("self", "cls")]

    documented = _args(function) | elsewhere

    assert [name for name in wanted if name not in documented] == [], f"{label}: document them under Args:"


def _declared_fields(path: str) -> list[str]:
    """The fields the zephyr_tgi classes of a pydantic model or dataclass declare (not LangChain's, say)."""
    module_name, _, name = path.rpartition(".")
    runtime = getattr(importlib.import_module(module_name), name)
    if not isinstance(runtime, type) or not (dataclasses.is_dataclass(runtime) or issubclass(runtime, BaseModel)):
        return []
    declared: list[str] = []
    for cls in reversed(runtime.__mro__):
        if cls.__module__.startswith(f"{PACKAGE}."):
            declared += [field for field in vars(cls).get("__annotations__", {}) if not field.startswith("_")]
    return [field for field in dict.fromkeys(declared) if field not in ("model_config", "__slots__")]


MODELS = [path for path in _documented_paths() if _declared_fields(path)]


@pytest.mark.parametrize("path", MODELS)
def test_every_field_of_a_model_is_documented(path: str) -> None:
    model = _target(path)
    assert isinstance(model, griffe.Class)
    documented = _sections(model, griffe.DocstringSectionKind.attributes) | _args(model)
    documented |= {name for name, member in model.all_members.items() if member.docstring is not None}

    assert [field for field in _declared_fields(path) if field not in documented] == [], "add them under Attributes:"


@pytest.mark.parametrize(("sync_path", "async_path"), TWINS)
def test_the_twins_are_documented_in_the_same_words(sync_path: str, async_path: str) -> None:
    sync, asynchronous = _target(sync_path), _target(async_path)
    assert isinstance(sync, griffe.Class)
    assert isinstance(asynchronous, griffe.Class)

    def docstrings(cls: griffe.Class) -> dict[str, str]:
        found: dict[str, str] = {}
        for name, member in cls.all_members.items():
            target = member.final_target if isinstance(member, griffe.Alias) else member
            if (not name.startswith("_") or name == "__init__") and target.docstring is not None and _ours(target):
                found[name] = target.docstring.value
        return found

    sync_docs, async_docs = docstrings(sync), docstrings(asynchronous)
    shared = sorted(sync_docs.keys() & async_docs.keys())
    assert shared
    assert {name: sync_docs[name] for name in shared} == {name: async_docs[name] for name in shared}


def test_the_check_sees_the_client_methods() -> None:
    labels = {label for label, _, _ in CALLABLES}

    assert {"zephyr_tgi.ZephyrClient.chat", "zephyr_tgi.AsyncZephyrClient.chat_stream"} <= labels
    assert "zephyr_tgi.ZephyrClient.__init__" in labels  # the constructor inherited from the shared surface
    assert "zephyr_tgi.bench.run_load" in labels
    assert {"zephyr_tgi.SamplingParams", "zephyr_tgi.GenerationResult", "zephyr_tgi.testing.Faults"} <= set(MODELS)
