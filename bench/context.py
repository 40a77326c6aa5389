"""What the harness hands to every scenario's ``run(ctx)``.

The fields are a contract other scenarios are written against: add fields,
never rename or remove one.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import ProcessSet


@dataclass
class ScenarioContext:
    workdir: Path  # a fresh scratch directory under bench/.work/, kept after the run for its logs
    quick: bool  # smaller counts and shorter windows, for development
    repo: Path  # the repository root
    python: str  # the project venv's python (the one running the harness), for starting orbited
    procs: ProcessSet = field(default_factory=ProcessSet)  # stopped by the harness after run()
    name: str = ""
    profile: bool = False  # --profile: attach py-spy to Orbited (bench/profile.py); figures are then not reference

    @property
    def orbited(self) -> list[str]:
        """argv prefix that starts this checkout's orbited with the project venv."""
        return [self.python, "-m", "orbited"]

    def log(self, message: str) -> None:
        """Progress for the person watching; results go in the returned dict, not here."""
        stamp = time.strftime("%H:%M:%S")
        print(f"[{stamp}] {self.name}: {message}", file=sys.stderr, flush=True)
