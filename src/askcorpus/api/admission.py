"""Admission control: lanes of bounded work (a number computing, a bounded FIFO queue, deadlines), refused past that."""

from __future__ import annotations

import asyncio
import math
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, AsyncIterator, Awaitable, Callable

if TYPE_CHECKING:
    from ..config import Settings

# Rejection reasons (the `reason` label of askcorpus_rejections_total).
QUEUE_FULL = "queue_full"
DEADLINE = "deadline"  # turned away at once: the expected wait plus one search does not fit the budget
EXPIRED = "expired"  # dropped after waiting: the budget ran out before a turn came
DISCONNECTED = "disconnected"
REASONS = (QUEUE_FULL, DEADLINE, EXPIRED, DISCONNECTED)

# Weight of the newest search in the running estimate of how long one search takes once admitted.
SERVICE_SMOOTHING = 0.2
# Admit a waiter only if its expected wait plus one search, times this, fits its deadline: the estimate is a
# running mean, and a waiter admitted on a too-hopeful guess is dropped late (a slow 503) or answers past its
# deadline. Turning it away at once costs little: the queue behind the running searches stays non-empty.
HEADROOM = 1.25


class Rejected(Exception):
    """A search turned away before any model work: `reason` is one of REASONS; the service answers 503."""

    def __init__(self, reason: str, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after


class AdmissionGate:
    """At most `concurrency` holders of a turn at once and `queue` waiting for one, served first come first served.

    Everything runs on the event loop, so the counts need no lock. A search whose deadline leaves less time than
    the expected wait for a turn plus one search (from a running estimate of recent searches) is turned away at
    once; one that waits past that point is dropped then; both before any model work. A waiter whose client has
    gone away gives its turn to the next one without computing anything.
    """

    def __init__(self, concurrency: int, queue: int, noun: str = "search", plural: str = "searches") -> None:
        if concurrency < 1 or queue < 0:
            raise ValueError(f"concurrency must be >= 1 and queue >= 0, got {concurrency} and {queue}")
        self.concurrency = concurrency
        self.queue = queue
        # What a turn is for, as the refusals name it: "a search", "searches"; "an answer", "answers".
        self.noun = noun
        self.plural = plural
        self._one = ("an " if noun[:1] in "aeiou" else "a ") + noun
        self.running = 0
        self.max_running = 0
        self.max_waiting = 0
        self.service_seconds = 0.0  # running estimate of one admitted search; 0 until the first one ends
        self.reserved = 0  # places held by searches doing cheaper work first (`reserve`)
        self._waiters: deque[asyncio.Future] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def _reject(self, reason: str, message: str) -> Rejected:
        # Retry-After in whole seconds (RFC 9110), at least 1: about when the searches waiting now have all had
        # their turn (turns free about every service_seconds / concurrency). Sooner, a turned-away client mostly
        # meets a full queue again, and answering its retries takes CPU from the searches.
        retry = max(1, math.ceil((len(self._waiters) + self.reserved) * self.service_seconds / self.concurrency))
        return Rejected(reason, message, retry)

    @asynccontextmanager
    async def turn(self, deadline: float, client_gone: Callable[[], Awaitable[bool]] | None = None, *,
                   reservation: "Reservation | None" = None) -> AsyncIterator[None]:
        """Hold one turn for the body of the `async with`; `deadline` is in the running loop's time.

        Raises Rejected (before the body runs) when the queue is full, when the deadline leaves no time for a
        search, or when `client_gone()` says the client disconnected while it waited. With a `reservation` (see
        `reserve`) the place it holds is used: it is never refused for a full queue or at once for its deadline.
        """
        loop = asyncio.get_running_loop()
        if reservation is not None:
            reservation.use()
        waited = await self._acquire(loop, deadline, reserved=reservation is not None)
        try:
            # Only a search that waited can have lost its client meanwhile; asking costs a receive per request.
            if waited and client_gone is not None and await client_gone():
                raise self._reject(DISCONNECTED, f"the client disconnected while its {self.noun} waited")
            started = loop.time()
            try:
                yield
            finally:
                self._learn(loop.time() - started)
        finally:
            self._release()

    def reserve(self, deadline: float, now: float) -> "Reservation":
        """A place in this lane, held from now while cheaper work comes first: refused at once (Rejected) when the
        lane is full or the turn could not come in time, counting the places already held, so a question bound
        for this lane is told before that work rather than after it."""
        refused = self.refusal(deadline, now)
        if refused is not None:
            raise refused
        self.reserved += 1
        return Reservation(self)

    def refusal(self, deadline: float, now: float) -> Rejected | None:
        """Why a turn asked for now, with this deadline, would be refused at once; None when it would be given or
        could be waited for. Places reserved count as waiting."""
        ahead = len(self._waiters) + self.reserved  # everyone who will take a turn before this one
        if self.running + ahead < self.concurrency:
            return None
        if ahead - (self.concurrency - self.running) >= self.queue:
            return self._reject(QUEUE_FULL, f"server busy: {self.running} {self.plural} running and {ahead} "
                                            f"waiting (the limits are {self.concurrency} and {self.queue}); "
                                            "retry later")
        left = deadline - now
        # Turns free about every service_seconds / concurrency: one that would start too late is told at once.
        expected_wait = (self.running + ahead - self.concurrency + 1) / self.concurrency * self.service_seconds
        if left - self.service_seconds <= 0 or HEADROOM * (expected_wait + self.service_seconds) > left:
            return self._reject(DEADLINE, f"server busy: a turn would come in about {expected_wait * 1000:.0f} ms "
                                          f"({ahead} waiting) and {self._one} takes about "
                                          f"{self.service_seconds * 1000:.0f} ms, more than the {self.noun}'s "
                                          f"deadline leaves ({max(0.0, left) * 1000:.0f} ms); retry later")
        return None

    async def _acquire(self, loop: asyncio.AbstractEventLoop, deadline: float, reserved: bool = False) -> bool:
        """Take a turn, at once (False) or after waiting for one (True); Rejected when refused."""
        if self.running < self.concurrency and not self._waiters:
            self._enter()
            return False
        if not reserved:
            refused = self.refusal(deadline, loop.time())
            if refused is not None:
                raise refused
        budget = deadline - loop.time() - self.service_seconds
        waiter = loop.create_future()
        self._waiters.append(waiter)
        self.max_waiting = max(self.max_waiting, len(self._waiters))
        try:
            await asyncio.wait((waiter,), timeout=max(0.0, budget))
        except BaseException:  # cancelled (e.g. shutdown): hand on a turn given meanwhile
            self._abandon(waiter)
            raise
        if waiter.done() and not waiter.cancelled():
            return True  # the releasing search handed its turn over: self.running already counts this one
        self._abandon(waiter)
        raise self._reject(EXPIRED, f"server busy: no turn came within the {self.noun}'s deadline (it leaves "
                                    f"{max(0.0, deadline - loop.time()) * 1000:.0f} ms, and {self._one} takes "
                                    f"about {self.service_seconds * 1000:.0f} ms); retry later")

    def _abandon(self, waiter: asyncio.Future) -> None:
        if waiter.done() and not waiter.cancelled():
            self._release()  # the turn arrived just as this waiter gave up: pass it on
            return
        waiter.cancel()
        try:
            self._waiters.remove(waiter)
        except ValueError:
            pass

    def _enter(self) -> None:
        self.running += 1
        self.max_running = max(self.max_running, self.running)

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the turn passes straight on: running stays the same
                return
        self.running -= 1

    def _learn(self, seconds: float) -> None:
        if self.service_seconds == 0.0:
            self.service_seconds = seconds
        else:
            self.service_seconds += SERVICE_SMOOTHING * (seconds - self.service_seconds)


class Reservation:
    """A place held in a lane (`AdmissionGate.reserve`): used by the turn it is given to, or released; once."""

    def __init__(self, gate: AdmissionGate) -> None:
        self.gate = gate
        self.held = True

    def use(self) -> None:
        self.release()

    def release(self) -> None:
        if self.held:
            self.held = False
            self.gate.reserved -= 1


@dataclass(frozen=True)
class Lanes:
    """The service's lanes, each bounding one kind of costly work with its own turns, queue and metric label:
    `search` the cheap stages every question passes (encode, first stage, fusion: they batch across the questions
    holding a turn), `rerank` the cross-encoder, `generate` the language model."""

    search: AdmissionGate
    rerank: AdmissionGate
    generate: AdmissionGate

    @classmethod
    def from_settings(cls, settings: "Settings") -> "Lanes":
        return cls(AdmissionGate(settings.search_concurrency, settings.search_queue),
                   AdmissionGate(settings.rerank_concurrency, settings.rerank_queue, noun="reranked search",
                                 plural="reranked searches"),
                   AdmissionGate(settings.generate_concurrency, settings.generate_queue, noun="answer",
                                 plural="answers"))

    def named(self) -> dict[str, AdmissionGate]:
        return {"search": self.search, "rerank": self.rerank, "generate": self.generate}
