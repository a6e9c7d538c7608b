"""One `X-Request-Id` per public call: sent on each of its requests (retries included) and kept on what it returns.

The shells make one `CallId` per public call and hand it to every effect they perform for it, so the id costs a
header per request and nothing per token. When the server answers with an `x-request-id` of its own (a gateway
or router that assigns ids), that one is kept instead: it is the id the server's logs know.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TypeVar, cast

from .._errors import ZephyrTGIError
from .._types import ChatCompletion, GenerationResult
from .transport import WireRequest

__all__ = ["REQUEST_ID_HEADER", "CallId"]

REQUEST_ID_HEADER = "X-Request-Id"
_T = TypeVar("_T")
_KEPT_ON = (GenerationResult, ChatCompletion)


class CallId:
    """The id of one public call, and where it goes."""

    __slots__ = ("sent", "value")

    def __init__(self) -> None:
        # 128 random bits as 32 hex digits, the form of nginx's $request_id (and a tenth of uuid4()'s cost).
        self.sent = os.urandom(16).hex()  # what goes out on every attempt
        self.value = self.sent  # what is kept: the server's id once it has answered with one

    def stamp(self, request: WireRequest) -> WireRequest:
        """`request` with this call's `X-Request-Id` (the id we chose: the same on every attempt)."""
        return request.with_headers({REQUEST_ID_HEADER: self.sent})

    def heard(self, headers: Mapping[str, str]) -> None:
        """Keep the server's own id when it answers with one."""
        server_id = headers.get("x-request-id")
        if server_id:
            self.value = server_id

    def keep(self, result: _T) -> _T:
        """`result` carrying this call's id, when it is a generation or a chat completion."""
        if isinstance(result, _KEPT_ON):
            # A copy (a few µs) rather than a private attribute: pydantic initialises private attributes on every
            # construction, which made each parse of these models several times slower.
            return cast("_T", result.model_copy(update={"request_id": self.value}))
        return result

    def mark(self, error: ZephyrTGIError) -> None:
        """Put this call's id on an error it ends with (an error already marked by an inner call keeps its id)."""
        if error.request_id is None:
            error.request_id = self.value
