"""uvicorn's httptools protocol with a bound on the request head (request line and headers).

httptools (llhttp) sets no limit of its own: a client that sends header bytes and never the
blank line that ends them was buffered without end (40 MB of one header held by one
connection, measured; a few such connections exhaust the server's memory). Past
`MAX_REQUEST_HEAD_BYTES` the request is answered 431 and the connection closed, before the
app sees it. Bodies are bounded by `BodySizeLimit` (middleware.py), a head here.
"""

from __future__ import annotations

import json
from typing import Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Several times what browsers and proxies send (nginx reads 32 KiB of headers by default,
# Apache 100 fields of 8 KiB); the dashboard's cookie and a bearer token are under 1 KiB.
MAX_REQUEST_HEAD_BYTES: Final = 64 << 10


class BoundedHeadProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` answering 431 once a request's head passes the bound."""

    _head_bytes = 0
    _in_head = True

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._in_head = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Counted after the parser took the bytes: if the head ended in them, nothing is
        # counted; if it did not, they are all head (at most one read of another message's
        # tail counted with them).
        if self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_REQUEST_HEAD_BYTES:
                self._refuse_head()

    def _refuse_head(self) -> None:
        body = json.dumps(
            {
                "detail": "request line and headers larger than the server's limit of "
                f"{MAX_REQUEST_HEAD_BYTES} bytes"
            }
        ).encode()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + body
        )
        self.transport.close()
