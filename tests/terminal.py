"""A tiny terminal for tests: what a screen shows after the bytes a live display wrote.

It knows what rich's live display uses: text, carriage return, newline, erase line, cursor up,
and autowrap at the right margin (a character written past the last column starts a new line).
"""

from __future__ import annotations

import re

TOKEN = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r|\n|[^\x1b\r\n]")


def screen(data: str, width: int) -> list[str]:
    lines: list[list[str]] = [[]]
    row = col = 0

    def down():
        nonlocal row, col
        row, col = row + 1, 0
        while len(lines) <= row:
            lines.append([])

    for token in TOKEN.findall(data):
        if token == "\r":
            col = 0
        elif token == "\n":
            down()
        elif token.startswith("\x1b["):
            count = re.match(r"\x1b\[([0-9]*)", token).group(1)
            if token.endswith("A"):
                row = max(0, row - int(count or 1))
            elif token.endswith("K"):
                lines[row] = []
        else:
            if col >= width:  # the cursor waited in the last column: wrap first
                down()
            line = lines[row]
            line.extend(" " * (col + 1 - len(line)))
            line[col] = token
            col += 1
    return ["".join(line).rstrip() for line in lines]
