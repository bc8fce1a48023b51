"""The interactive terminal loop's input, shared by `qwythos chat` and `qwythos dialogue`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TextIO

QUIT = ("/quit", "/exit")


def prompt_lines(stdin: TextIO, stdout: TextIO, prompt: str) -> Iterator[str]:
    """The stripped, non-empty lines typed after ``prompt``, until EOF (a newline is written) or /quit."""
    while True:
        stdout.write(prompt)
        stdout.flush()
        line = stdin.readline()
        if not line:  # EOF
            stdout.write("\n")
            return
        line = line.strip()
        if not line:
            continue
        if line in QUIT:
            return
        yield line
