"""What every workload is handed: the server, the run's figures, the scale, the peers to compare."""
from __future__ import annotations

import dataclasses
import sys
import time
from typing import TypeVar

from benchmarks.figures import Figures
from benchmarks.servers import Server

T = TypeVar("T")


@dataclasses.dataclass
class RunContext:
    server: Server
    figures: Figures
    quick: bool
    peers: list[str]
    started: float = dataclasses.field(default_factory=time.monotonic)

    def scale(self, full: T, quick: T) -> T:
        """The full run's count, or the quick run's."""
        return quick if self.quick else full

    def say(self, message: str) -> None:
        """Progress for a human, on stderr (stdout carries the figures only)."""
        print(f"[{time.monotonic() - self.started:6.1f} s] {message}", file=sys.stderr, flush=True)

    def add_records(self, records: list[dict]) -> None:
        """Figures a peer script printed, added as this run's."""
        for record in records:
            self.figures.add(record["name"], record["value"], record["unit"], **record.get("params", {}))
