"""What this process uses of the two things a session costs: memory and descriptors.

For /system/status (the master's figures, and each worker's in its report).
Read from Linux's /proc; elsewhere only the limit is known.
"""

from __future__ import annotations

import os
import resource


def process_usage() -> dict:
    usage: dict = {"open_files_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}
    try:
        with open("/proc/self/statm") as statm:
            usage["rss_bytes"] = int(statm.read().split()[1]) * resource.getpagesize()
        # Linux 6.2+ gives the count as the directory's size: no listing of 20,000 entries a second
        count = os.stat("/proc/self/fd").st_size
        usage["open_files"] = count if count > 0 else len(os.listdir("/proc/self/fd")) - 1
    except OSError:
        pass
    return usage
