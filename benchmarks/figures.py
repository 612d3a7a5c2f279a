"""Figures: the JSON line each one prints, and the record of the last ones (results/latest.jsonl).

A figure is identified by its name and its params (the configuration it was measured with),
so a quick run, with its smaller counts, is compared with the last quick run and never with a
full one. The record keeps the last value of every figure ever measured: a run with ``--only``
updates its own figures and leaves the others as they were.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

RESULTS_PATH = Path(__file__).parent / "results" / "latest.jsonl"


@dataclasses.dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str
    params: dict[str, Any]

    @property
    def key(self) -> str:
        return json.dumps([self.name, self.params], sort_keys=True)

    def as_record(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "unit": self.unit, "params": self.params}


class Figures:
    """The figures of one run, printed as they come, each with its previous value."""

    def __init__(self, results_path: Path = RESULTS_PATH) -> None:
        self.results_path = results_path
        self.previous = {figure.key: figure for figure in read_records(results_path)}
        self.measured: list[Figure] = []

    def add(self, name: str, value: float, unit: str, **params: Any) -> Figure:
        figure = Figure(name, value, unit, params)
        self.measured.append(figure)
        previous = self.previous.get(figure.key)
        change = None
        if previous is not None and previous.value:
            change = round(figure.value / previous.value, 3)
        line = {**figure.as_record(), "previous": previous.value if previous else None, "change": change}
        print(json.dumps(line), flush=True)
        return figure

    def find(self, name: str, **params: Any) -> Figure | None:
        """The figure of this run with that name whose params include the given ones."""
        for figure in self.measured:
            if figure.name == name and all(figure.params.get(key) == value for key, value in params.items()):
                return figure
        return None

    def save(self) -> None:
        """Merges this run's figures into the record, one JSON line each, sorted for stable diffs."""
        records = dict(self.previous)
        records.update((figure.key, figure) for figure in self.measured)
        self.results_path.parent.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps(records[key].as_record(), sort_keys=True) for key in sorted(records)]
        self.results_path.write_text("".join(line + "\n" for line in lines))


def read_records(path: Path) -> Iterable[Figure]:
    if not path.exists():
        return []
    figures = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            figures.append(Figure(record["name"], record["value"], record["unit"], record.get("params", {})))
        except (ValueError, KeyError) as exc:
            print(f"benchmarks: ignoring line {number} of {path}: {exc}", file=sys.stderr)
    return figures
