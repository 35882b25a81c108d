"""Refusing request bodies over the upload limit before they are read whole.

A declared ``Content-Length`` over the limit is answered 413 without reading a byte of the
body; a chunked body is counted as it streams in and cut off with 413 as soon as it passes
the limit, whatever the application was doing with it.
"""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from typing import Any

from cmi_cli.serving.errors import error_body


class BodyTooLargeError(Exception):
    """Raised into the application when a streamed body passes the limit."""


class BodyLimitMiddleware:
    """Pure ASGI middleware enforcing ``max_bytes`` on request bodies.

    Args:
        app: The wrapped ASGI application.
        max_bytes: The largest body accepted.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

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
        state = {"received": 0, "exceeded": False, "started": False}

        async def limited_receive() -> MutableMapping[str, Any]:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_bytes:
                    state["exceeded"] = True
                    raise BodyTooLargeError
            return message

        async def guarded_send(message: MutableMapping[str, Any]) -> None:
            if state["exceeded"]:
                return  # the application's answer to a cut-off body is replaced by ours
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLargeError:
            pass
        except Exception:
            if not state["exceeded"]:
                raise
        if state["exceeded"] and not state["started"]:
            await self._refuse(send)

    async def _refuse(self, send: Any) -> None:
        mb = self.max_bytes / (1024 * 1024)
        await _send_error(
            send, 413, "payload_too_large", f"the request body is larger than {mb:.3g} MB"
        )


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
