"""The base of the option models users build (`SamplingParams`, `Timeout`, `RetryPolicy`, `Grammar`).

Building one with an invalid value raises `ConfigurationError` (a `ValueError`) with pydantic's error as
`__cause__`, the same class a bad argument to a client method raises, instead of pydantic's `ValidationError`.
The metaclass catches it around construction only, so pydantic's own validation (`model_validate`, nested
models) is untouched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from ._errors import ConfigurationError

if TYPE_CHECKING:  # the type checker needs the class; at run time it is read off BaseModel, not imported
    from pydantic._internal._model_construction import ModelMetaclass as _ModelMetaclass
else:
    _ModelMetaclass = type(BaseModel)

__all__ = ["OptionsModel", "describe_validation_error"]


def describe_validation_error(exc: ValidationError, what: str) -> str:
    """One line naming every invalid field and why."""
    problems = "; ".join(f"{'.'.join(str(p) for p in error['loc']) or what}: {error['msg']}" for error in exc.errors())
    return f"invalid {what}: {problems}"


class _OptionsMetaclass(_ModelMetaclass):
    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except ValidationError as exc:
            raise ConfigurationError(describe_validation_error(exc, cls.__name__)) from exc


class OptionsModel(BaseModel, metaclass=_OptionsMetaclass):
    """A pydantic model whose construction errors are `ConfigurationError`s."""
