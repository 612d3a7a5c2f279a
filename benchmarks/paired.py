"""Figures measured in alternating rounds (cabbage, then each peer, a few times over): each
system's figure is the median of its rounds' figures, and each ratio against a peer the median
of the rounds' ratios. On a shared machine whose load moves within minutes, a ratio of two
figures measured minutes apart says more about the minutes than about the systems.
"""
from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from benchmarks.context import RunContext

Round = Mapping[str, float]  # cabbage's figures of one round: name -> value
PeerRound = Mapping[str, Mapping[str, Any]]  # a peer script's records of one round: name -> record


def by_name(records: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """A peer script's records of one round, by figure name."""
    return {record["name"]: record for record in records}


def of_rounds(rounds: int) -> dict[str, Any]:
    return {"rounds": rounds, "of": "median of the rounds"}


def add_medians(context: RunContext, ours: Sequence[Round], units: Mapping[str, str],
                params: Mapping[str, Mapping[str, Any]], digits: int = 3) -> None:
    """cabbage's figures, each the median of the rounds' (``units`` and ``params`` by name)."""
    for name in ours[0]:
        value = round(statistics.median(found[name] for found in ours), digits)
        context.figures.add(name, value, units[name], **params[name], **of_rounds(len(ours)))


def add_peer_medians(context: RunContext, peer_rounds: Sequence[PeerRound], digits: int = 3) -> None:
    """Each figure a peer's script printed, as the median of the rounds' that have it."""
    for name, record in peer_rounds[0].items():
        values = [found[name]["value"] for found in peer_rounds if name in found]
        context.figures.add(name, round(statistics.median(values), digits), record["unit"],
                            **{**record.get("params", {}), **of_rounds(len(peer_rounds))})


def add_peer_ratios(context: RunContext, peer: str, ours: Sequence[Round], peer_rounds: Sequence[PeerRound],
                    names: Iterable[str]) -> None:
    """<name>_ratio_vs_<peer>: the median over the rounds of cabbage's figure over the peer's
    (``<name>_<peer>``); a round where either is missing or zero is left out."""
    for name in names:
        theirs = f"{name}_{peer}"
        ratios = [found_ours[name] / found_theirs[theirs]["value"]
                  for found_ours, found_theirs in zip(ours, peer_rounds)
                  if found_ours.get(name) is not None and found_theirs.get(theirs, {}).get("value")]
        if ratios:
            context.figures.add(f"{name}_ratio_vs_{peer}", round(statistics.median(ratios), 3), "ratio",
                                numerator=name, denominator=f"{theirs} peer={peer}", rounds=len(ratios),
                                of="median of the rounds' ratios")
