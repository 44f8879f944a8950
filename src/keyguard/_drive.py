"""The flow kernel: decisions written once as generators, performed sync or async.

A *flow* is a generator that makes decisions and yields the I/O it needs as
typed *steps*::

    record = yield from GetKey(key_id)      # a Step[KeyRecord | None]

A step is a small object that says what to do and what comes back, so mypy
checks what every ``yield`` sends and what it receives. A driver performs each
step on the flow's *I/O context* (the backends the flow runs against: a key
store, a limiter, a database connection) and sends the result back in:
:func:`drive_sync` calls the step's :meth:`Step.run`, :func:`drive_async`
awaits its :meth:`Step.arun`. So what is malformed, which check comes first and
what a failure means exist in exactly one place, whichever kind of app runs
them; there is never a sync tree and an async twin.

A failure of the I/O reaches the flow as :class:`~keyguard.StorageError`
(thrown in at the ``yield``, the driver's exception chained), so the flow also
decides what a failure means. keyguard's own errors reach it as they are.

The same pair of drivers runs the key managers, both middlewares, the Redis
limiter, the SQL store and the contract suites in :mod:`keyguard.testing`.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Generic, Literal, Protocol, TypeVar, runtime_checkable

from ._errors import KeyguardError, StorageError

__all__ = ["Flow", "NonBlocking", "Step", "drive_async", "drive_sync", "never_blocks"]

R = TypeVar("R")
T = TypeVar("T")


class Step(Generic[R]):
    """One I/O step of a flow, answered with an ``R``.

    A subclass holds the step's arguments in slots and implements :meth:`run`
    and :meth:`arun` against the I/O context its flows are driven with. Its
    repr must never show a secret: a failed step is named in the error.
    """

    __slots__ = ()

    def run(self, io: Any) -> R:
        """Perform the step synchronously on ``io``."""
        raise NotImplementedError

    async def arun(self, io: Any) -> R:
        """Perform the step on ``io`` without blocking the event loop."""
        raise NotImplementedError

    def __iter__(self) -> Generator[Step[R], R, R]:
        """``result = yield from step``: yield this step, return what the driver sends back."""
        return (yield self)


#: A flow that ends in a ``T``.
Flow = Generator[Step[Any], Any, T]


@runtime_checkable
class NonBlocking(Protocol):
    """**Protocol**: a backend whose every method returns without waiting for I/O.

    An in-memory store or limiter declares it (``nonblocking = True``); an
    async caller built over such backends only runs its flows with
    :func:`drive_sync`, sparing a coroutine per step. Declare it only when no
    method ever blocks: it is checked when a manager or middleware is built,
    and then trusted on every request.
    """

    nonblocking: Literal[True]


def never_blocks(*backends: object) -> bool:
    """True when every backend given (``None`` aside) declares :class:`NonBlocking`."""
    return all(b is None or getattr(b, "nonblocking", False) is True for b in backends)


def _failure(exc: Exception, step: Step[Any]) -> KeyguardError:
    if isinstance(exc, KeyguardError):
        return exc
    wrapped = StorageError(f"{type(step).__name__} failed: {type(exc).__name__}")
    wrapped.__cause__ = exc
    return wrapped


def drive_sync(flow: Flow[T], io: Any) -> T:
    """Run ``flow`` to its end, performing each step with :meth:`Step.run` on ``io``."""
    send = flow.send
    try:
        step = send(None)
        while True:
            try:
                result = step.run(io)
            except Exception as exc:  # a failure of the I/O is the flow's to judge
                step = flow.throw(_failure(exc, step))
            else:
                step = send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def drive_async(flow: Flow[T], io: Any) -> T:
    """Run ``flow`` to its end, awaiting :meth:`Step.arun` on ``io`` for each step."""
    send = flow.send
    try:
        step = send(None)
        while True:
            try:
                result = await step.arun(io)
            except Exception as exc:  # a failure of the I/O is the flow's to judge
                step = flow.throw(_failure(exc, step))
            else:
                step = send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
