"""`qwythos chat`: an interactive terminal chat; every token is coloured by the pathway that carried it.

Reads lines from ``stdin`` (a terminal, a pipe or a pty), streams each reply as it is generated, then prints a
summary (pathway shares and switches). Lines starting with / are commands (see ``sessions.HELP``).
"""

from __future__ import annotations

from typing import TextIO

from ..console import prompt_lines
from ..inference.engine import Engine, TokenEvent
from ..inference.sampling import GearSampling, SamplingParams
from ..inference.trace import PALETTE, RESET
from .sessions import ChatSession, dominant


def legend(pathways: list[str], color: bool) -> str:
    if not color:
        return "pathways: " + "  ".join(f"[{p}]" for p in pathways)
    return "pathways: " + "  ".join(
        f"{PALETTE[i % len(PALETTE)]}■ {p}{RESET}" for i, p in enumerate(pathways)
    )


def printer(stdout: TextIO, pathways: list[str], color: bool):
    """A token-event callback that writes each text delta coloured (or [marked]) by its pathway."""
    last: list[int | None] = [None]

    def show(ev: TokenEvent) -> None:
        p = dominant(ev)
        if not ev.delta:
            return
        if color and p is not None:
            stdout.write(PALETTE[p % len(PALETTE)] + ev.delta + RESET)
        else:
            stdout.write((f"[{pathways[p]}]" if p is not None and p != last[0] else "") + ev.delta)
            last[0] = p
        stdout.flush()

    return show


def run_chat(
    engine: Engine,
    stdin: TextIO,
    stdout: TextIO,
    params: SamplingParams,
    color: bool = True,
    mode: str | None = None,
    gear: dict[str, float] | None = None,
    system: str | None = None,
    gear_sampling: GearSampling | None = None,
) -> int:
    """The chat loop; returns the number of replies. Ends at EOF or /quit."""
    session = ChatSession(engine, params, mode=mode, gear=gear, system=system, gear_sampling=gear_sampling)
    pathways = engine.pathways
    stdout.write(legend(pathways, color) + "   (/help for commands, /quit to leave)\n")
    replies = 0
    for line in prompt_lines(stdin, stdout, "you> "):
        if line.startswith("/"):
            try:
                stdout.write(session.command(line) + "\n")
            except ValueError as e:
                stdout.write(f"error: {e}\n")
            continue
        stdout.write("bot> ")
        show = printer(stdout, pathways, color)
        try:
            _, summary = session.reply(line, on_event=show)
        except ValueError as e:
            stdout.write(f"\nerror: {e}\n")
            continue
        stdout.write("\n" + summary.line() + "\n")
        replies += 1
    return replies
