"""The ASGI pieces both of keyguard's ASGI shells use: reading a body, adding headers."""

from __future__ import annotations

from collections.abc import Awaitable

from ._types import Message, Receive, Send

__all__ = ["BodyReader", "adding_headers", "read_body"]


def adding_headers(send: Send, raw: list[tuple[bytes, bytes]]) -> Send:
    """``send``, adding ``raw`` headers to the response the app starts."""

    def sender(message: Message) -> Awaitable[None]:
        # A plain function handing back send's awaitable: one coroutine less per message.
        if message["type"] == "http.response.start":
            # A new list (the app may reuse its own), set on the app's message as
            # Starlette's middlewares do.
            message["headers"] = [*message.get("headers", ()), *raw]
        return send(message)

    return sender


async def read_body(
    receive: Receive, limit: int, kept: list[Message] | None = None
) -> bytes | None:
    """The request body, up to ``limit`` bytes; None when larger or cut short.

    Every message received is appended to ``kept`` when given, so that the app
    can be handed the body again.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if kept is not None:
            kept.append(message)
        if message["type"] != "http.request":
            return None
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class BodyReader:
    """Reads a form body for the flow, and hands the messages it read back to the app."""

    __slots__ = ("_receive", "messages")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.messages: list[Message] = []

    async def aread_form(self, limit: int) -> bytes | None:
        return await read_body(self._receive, limit, self.messages)

    async def replay(self) -> Message:
        if self.messages:
            return self.messages.pop(0)
        return await self._receive()
