"""Refusing request bodies over the upload limit, or too slow to arrive, before they are read.

A declared ``Content-Length`` over the limit is answered 413 without reading a byte of the
body; a chunked body is counted as it streams in and cut off with 413 as soon as it passes
the limit, whatever the application was doing with it. A body whose next piece does not come
within ``body_timeout_s``, or that is not complete after ``body_deadline_s``, is answered 408
and its connection closed, so a client that stops sending (a slow-loris upload) frees its
slot in seconds.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import MutableMapping
from typing import Any

from cmi_cli.serving.errors import error_body


class BodyRefusedError(Exception):
    """Raised into the application when the body is cut off (too large or too slow)."""


class BodyLimitMiddleware:
    """Pure ASGI middleware enforcing a size limit and read timeouts on request bodies.

    Args:
        app: The wrapped ASGI application.
        max_bytes: The largest body accepted.
        body_timeout_s: Longest wait for the next piece of a body (None: no limit).
        body_deadline_s: Longest time for the whole body (None: no limit).
    """

    def __init__(
        self,
        app: Any,
        max_bytes: int,
        body_timeout_s: float | None = None,
        body_deadline_s: float | None = None,
    ) -> None:
        self.app, self.max_bytes = app, max_bytes
        self.body_timeout_s, self.body_deadline_s = body_timeout_s, body_deadline_s

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        """Serve one ASGI connection."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared == -1:
            await _send_error(send, 400, "bad_request", "invalid Content-Length header")
            return
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send)
            return
        start = time.monotonic()
        state: dict[str, Any] = {"received": 0, "refusal": None, "started": False, "done": False}

        async def limited_receive() -> MutableMapping[str, Any]:
            if state["done"]:  # after the body only http.disconnect comes: wait as long as it takes
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self._wait_s(start))
            except TimeoutError:
                state["refusal"] = self._too_slow()
                raise BodyRefusedError from None
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                state["done"] = not message.get("more_body", False)
                if state["received"] > self.max_bytes:
                    state["refusal"] = self._too_large()
                    raise BodyRefusedError
            return message

        async def guarded_send(message: MutableMapping[str, Any]) -> None:
            if state["refusal"] is not None:
                return  # the application's answer to a cut-off body is replaced by ours
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyRefusedError:
            pass
        except Exception:
            if state["refusal"] is None:
                raise
        if state["refusal"] is not None and not state["started"]:
            await _send_error(send, *state["refusal"])

    def _wait_s(self, start: float) -> float | None:
        """Seconds the next piece of the body may take, or None for no limit."""
        waits = []
        if self.body_timeout_s is not None:
            waits.append(self.body_timeout_s)
        if self.body_deadline_s is not None:
            waits.append(max(0.0, self.body_deadline_s - (time.monotonic() - start)))
        return min(waits) if waits else None

    def _too_large(self) -> tuple[int, str, str]:
        mb = self.max_bytes / (1024 * 1024)
        return 413, "payload_too_large", f"the request body is larger than {mb:.3g} MB"

    def _too_slow(self) -> tuple[int, str, str]:
        return (
            408,
            "request_timeout",
            f"the request body did not arrive in time (next piece within {self.body_timeout_s} s, "
            f"all of it within {self.body_deadline_s} s)",
        )

    async def _refuse(self, send: Any) -> None:
        await _send_error(send, *self._too_large())


def _content_length(scope: MutableMapping[str, Any]) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return -1
            return length if length >= 0 else -1
    return None


async def _send_error(send: Any, status: int, code: str, message: str) -> None:
    body = json.dumps(error_body(code, message)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
