"""What this process uses of the two things a session costs: memory and descriptors.

For /system/status (the master's figures, and each worker's in its report).
Read from Linux's /proc; elsewhere only the limit is known.
"""

from __future__ import annotations

import errno
import os
import resource


def process_usage() -> dict:
    usage: dict = {"open_files_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}
    try:
        # Linux 6.2+ gives the count as the directory's size: no listing of 20,000 entries a
        # second, and no descriptor needed, so the count is there when the limit is reached
        count = os.stat("/proc/self/fd").st_size
        usage["open_files"] = count if count > 0 else len(os.listdir("/proc/self/fd")) - 1
    except OSError:
        pass
    try:
        with open("/proc/self/statm") as statm:
            usage["rss_bytes"] = int(statm.read().split()[1]) * resource.getpagesize()
    except OSError:
        pass
    return usage


OUT_OF_FILES = (errno.EMFILE, errno.ENFILE)  # the errors of a process, or the system, out of descriptors
FILES_RESERVE = 32  # descriptors a process keeps for the connections it has: backend sockets, files


def short_of_files(usage: dict) -> bool:
    """Whether a process is about to run out of descriptors (``usage`` from :func:`process_usage`)."""
    open_files = usage.get("open_files")
    return open_files is not None and open_files + FILES_RESERVE >= usage["open_files_limit"]
