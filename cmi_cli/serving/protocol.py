"""uvicorn's HTTP protocol with our limits and our JSON error shape.

uvicorn answers some requests itself, before the application sees them: malformed HTTP, a bad
``Content-Length`` or an oversized header block get a plain-text 400. It also waits forever for
a client that opens a connection and sends its headers slowly, or not at all (its keep-alive
timeout only runs between requests). This subclass of uvicorn's protocol (httptools when it is
installed, else h11) closes those gaps:

- the 400s uvicorn writes itself carry ``{"error": {...}}`` like every other error;
- a request's header block must arrive within ``header_timeout_s`` (a slow-loris client, or an
  idle connection that never sends a request, is closed);
- a header block over ``max_header_bytes`` is answered 431 and the connection closed;
- a connection beyond ``max_connections`` is answered 503 with ``Retry-After`` and closed
  (uvicorn's own ``limit_concurrency`` would answer in plain text).

What cannot be JSON: a client that stops mid-headers gets no answer at all (there is no request
to answer yet), only a closed connection. The body-read timeout (408) lives in
:class:`cmi_cli.serving.limits.BodyLimitMiddleware`, where the request is known.

The limits come from ``CMI_*`` variables (see :func:`configure`), so uvicorn's worker processes,
which build the protocol from its import string, see the same values as the parent.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
from typing import Any

from cmi_cli.serving.errors import error_body

if importlib.util.find_spec("httptools") is not None:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Base
else:  # the slim serve image may have uvicorn without httptools
    from uvicorn.protocols.http.h11_impl import H11Protocol as _Base  # type: ignore[assignment]

IMPORT_STRING = "cmi_cli.serving.protocol:CmiHttpProtocol"
_ENV = {
    "header_timeout_s": ("CMI_HEADER_TIMEOUT_S", 10.0),
    "max_header_bytes": ("CMI_MAX_HEADER_BYTES", 16384),
    "max_connections": ("CMI_MAX_CONNECTIONS", 1000),
    "retry_after_s": ("CMI_RETRY_AFTER_S", 1),
}
_REASONS = {
    400: b"Bad Request",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


def configure(
    header_timeout_s: float, max_header_bytes: int, max_connections: int, retry_after_s: int
) -> None:
    """Set the protocol's limits for this process and the workers it starts."""
    values = {
        "header_timeout_s": header_timeout_s,
        "max_header_bytes": max_header_bytes,
        "max_connections": max_connections,
        "retry_after_s": retry_after_s,
    }
    for name, value in values.items():
        os.environ[_ENV[name][0]] = str(value)


def _limit(name: str) -> Any:
    var, default = _ENV[name]
    raw = os.environ.get(var)
    return type(default)(float(raw)) if raw else default


def raw_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> bytes:
    """A complete ``HTTP/1.1`` error response in our JSON shape, closing the connection."""
    body = json.dumps(error_body(code, message)).encode()
    lines = [b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, b"Error"))]
    fields = {"content-type": "application/json", "content-length": str(len(body))}
    fields.update(headers or {})
    fields["connection"] = "close"
    lines += [f"{k}: {v}".encode("latin-1") for k, v in fields.items()]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class CmiHttpProtocol(_Base):
    """uvicorn's HTTP protocol with header limits, a connection cap and JSON errors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout = float(_limit("header_timeout_s"))
        self._max_header_bytes = int(_limit("max_header_bytes"))
        self._max_connections = int(_limit("max_connections"))
        self._retry_after = int(_limit("retry_after_s"))
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_cycle: object = None
        self._header_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Accept the connection, or refuse it (503) when too many are open."""
        super().connection_made(transport)
        if len(self.connections) > self._max_connections:
            self.connections.discard(self)
            transport.write(
                raw_error(
                    503,
                    "too_many_connections",
                    "the server has too many open connections; retry shortly",
                    {"Retry-After": str(self._retry_after)},
                )
            )
            transport.close()
            return
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the header timer with the connection."""
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Feed the parser; count header bytes until the request's headers are complete."""
        super().data_received(data)
        if self.transport.is_closing():
            return
        if not self._waiting_for_headers():
            self._cancel_header_timer()
            return
        self._arm_header_timer()
        self._header_bytes += len(data)
        if self._header_bytes > self._max_header_bytes:
            self._refuse(
                431,
                "headers_too_large",
                f"the request's headers are larger than {self._max_header_bytes} bytes",
            )

    def on_response_complete(self) -> None:
        """After an answer the next request's headers get a fresh allowance."""
        super().on_response_complete()
        self._cancel_header_timer()

    def on_headers_complete(self) -> None:
        """(httptools) Refuse a header block over the limit that arrived in one piece."""
        size = len(getattr(self, "url", b"")) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        if size > self._max_header_bytes:
            self._oversized = True
            raise ValueError("header block too large")  # the parser turns it into a 400 call
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        """Answer a request uvicorn could not parse, in our JSON shape."""
        if getattr(self, "_oversized", False):
            self._refuse(
                431,
                "headers_too_large",
                f"the request's headers are larger than {self._max_header_bytes} bytes",
            )
            return
        self._refuse(400, "bad_request", f"malformed HTTP request: {msg.rstrip('.')}")

    def _refuse(self, status: int, code: str, message: str) -> None:
        self._cancel_header_timer()
        if not self.transport.is_closing():
            self.transport.write(raw_error(status, code, message))
            self.transport.close()

    def _waiting_for_headers(self) -> bool:
        """True while the parser has not turned the bytes received into a new request."""
        cycle = self.cycle
        idle = cycle is None or cycle.response_complete
        if self._header_timer is None:
            return idle
        return idle and cycle is self._header_cycle

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_cycle, self._header_bytes = self.cycle, 0
            self._header_timer = self.loop.call_later(self._header_timeout, self._header_expired)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self._header_bytes = 0

    def _header_expired(self) -> None:
        self._header_timer = None
        if self._waiting_for_headers() and not self.transport.is_closing():
            # No request to answer yet: closing is all HTTP allows.
            self.transport.close()
