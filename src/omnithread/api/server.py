"""Running the service: uvicorn with a deadline on every request a client sends.

uvicorn closes a connection that sits idle between requests (keep-alive), but not one that stalls part-way
through its headers or its body, nor one that connects and sends nothing: a few hundred such connections,
cheap for a client to hold open, would each keep a descriptor and a buffer for good. Here every request must
arrive whole within ``request_timeout`` seconds of its first byte (or of the connection, for the first one);
past that the connection is answered 408 where no answer has begun, and closed.
"""

from __future__ import annotations

import asyncio

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["serve", "deadline_protocol"]

_TIMEOUT_ANSWER = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: 84\r\n\r\n"
    b'{"success":false,"code":"request_timeout","message":"the request did not arrive in time"}'
)


def deadline_protocol(seconds: float) -> type[HttpToolsProtocol]:
    """uvicorn's HTTP protocol with a deadline of ``seconds`` for each request to arrive whole."""

    class DeadlineProtocol(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            self._deadline: asyncio.TimerHandle | None = None
            super().connection_made(transport)
            self._arm()

        def _arm(self) -> None:
            if self._deadline is None:
                self._deadline = self.loop.call_later(seconds, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            if self.cycle is None or not self.cycle.response_started:
                self.transport.write(_TIMEOUT_ANSWER)
            self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self.cycle is None or self.cycle.response_complete:
                self._arm()  # the first bytes of a new request
            super().data_received(data)

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return DeadlineProtocol


def serve(app, host: str, port: int, request_timeout: float = 15.0) -> None:
    """Serve ``app`` until stopped, each request given ``request_timeout`` seconds to arrive."""
    uvicorn.run(app, host=host, port=port, log_level="warning", http=deadline_protocol(request_timeout))
