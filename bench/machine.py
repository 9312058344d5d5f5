"""The header every benchmark prints: the machine, the software, and how busy the machine was.

This development machine is shared (2 cores, other test runs going on): a figure means little
without the load average at the time it was taken, so each benchmark prints it at the start
and again at the end.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def header(title: str) -> str:
    """One Markdown line naming the machine, Python and the load average (1 / 5 / 15 min)."""
    return (
        f"**{title}** on {os.cpu_count()} cores ({cpu_model()}), Python "
        f"{sys.version.split()[0]}; load average {load_average()} at the start"
    )


def footer() -> str:
    return f"load average {load_average()} at the end"
