"""Running the server: in the foreground until SIGTERM or SIGINT (finishing what is in flight, bounded, then exit 0),
or in a thread of this process on a loopback port (tests and the bench)."""

import logging
import signal
import socket
import threading
import time
from contextlib import contextmanager
from types import FrameType
from typing import Any, Iterator

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


@contextmanager
def serve_in_thread(app: Any, start_timeout: float = 60.0) -> Iterator[str]:
    """The ASGI app served by uvicorn in a thread of this process on a free loopback port: yields its base URL."""
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name="askcorpus-uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the in-process server did not start within {start_timeout:.0f} s")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
