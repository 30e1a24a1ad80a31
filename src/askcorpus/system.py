"""What askcorpus asks of the operating system in more than one place: a folder's entries made durable, and whether
a host name is this machine."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Flush a folder's entries (a rename into it, a new file) to disk, so they survive a crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_loopback(host: str) -> bool:
    """Whether `host` ("localhost", an IPv4 or a bracketed IPv6 address) names this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
