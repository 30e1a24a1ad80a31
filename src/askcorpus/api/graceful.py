"""Graceful stop: on SIGTERM or SIGINT stop accepting, finish what is in flight (bounded), exit 0."""

import logging
import signal
import threading
from types import FrameType
from typing import Any

log = logging.getLogger("askcorpus.api")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def run_until_stopped(server: Any) -> int:
    """Run a `uvicorn.Server` in the foreground; 0 once a stop signal has been handled.

    uvicorn itself drains: on the signal it closes the listening socket, lets requests in flight (those waiting
    for a turn included) finish for up to `timeout_graceful_shutdown` seconds, then runs the app's shutdown. Then
    it restores the handlers it found and raises the signal again, so that a process killed by a signal says so;
    for a service a requested stop is the normal end, so the handlers it finds here only note the signal.
    """
    received: list[int] = []

    def note(sig: int, frame: FrameType | None) -> None:
        received.append(sig)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, note) for sig in STOP_SIGNALS}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        log.info("stopped by %s after finishing the requests in flight", signal.Signals(received[-1]).name)
    return 0
