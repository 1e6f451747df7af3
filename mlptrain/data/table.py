"""Reading a user's CSV table: its header's column names and every row's cells as text, each
row checked to have one cell per column, a missing cell (empty, NA, NaN, null) known as such.
What the cells mean (numbers, categories, the target) is data/csv.py's encoding."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from mlptrain.errors import DataError

MISSING_CELLS = frozenset({"", "na", "n/a", "nan", "null"})  # lowercased, spaces stripped


@dataclass
class Table:
    """A CSV's cells as text, by column; lines[i] is the file's line (1-based) of row i."""

    path: Path
    columns: list[str]
    cells: dict[str, list[str]]
    lines: list[int]
    _numbers: dict[str, list[float | None]] = field(default_factory=dict)

    def numbers(self, column: str) -> list[float | None]:
        """The column's cells as finite numbers (None: missing, or not a number)."""
        if column not in self._numbers:
            self._numbers[column] = [None if missing_cell(c) else _number(c)
                                     for c in self.cells[column]]
        return self._numbers[column]

    def place(self, row: int, column: str) -> str:
        return f"{self.path}, line {self.lines[row]}, column {column!r}"


def read_table(path: Path, delimiter: str) -> Table:
    """The cells of a CSV with a header row, each row checked to have one cell per column."""
    path = regular_file(Path(path))
    try:
        with opened(path) as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = next((row for row in reader if _filled(row)), None)
            if header is None:
                raise DataError(f"{path} is empty; expected a header row naming the columns, "
                                "then one row per sample.")
            columns = [name.strip() for name in header]
            _check_header(path, columns)
            rows, lines = [], []
            for row in reader:
                if not row:
                    continue  # a blank line
                if len(row) != len(columns):
                    raise DataError(
                        f"{path}, line {reader.line_num}: {len(row)} cells, but the header names "
                        f"{len(columns)} columns; every row needs one cell per column (data."
                        f"delimiter = {delimiter!r}: is that the file's separator?).")
                rows.append(row)
                lines.append(reader.line_num)
    except (csv.Error, UnicodeDecodeError) as exc:
        raise _unreadable(path, exc, reader.line_num) from None
    if not rows:
        raise DataError(f"{path} has a header but no rows; expected one row per sample.")
    cells = {name: [row[i].strip() for row in rows] for i, name in enumerate(columns)}
    return Table(path, columns, cells, lines)


def column_count(path: Path, delimiter: str) -> int:
    """How many columns the header of the CSV at `path` names (0: an empty file), with
    read_table's errors for a file that is not UTF-8 CSV."""
    path = regular_file(Path(path))
    try:
        with opened(path) as f:
            return len(next((row for row in csv.reader(f, delimiter=delimiter) if _filled(row)),
                             []))
    except (csv.Error, UnicodeDecodeError) as exc:
        raise _unreadable(path, exc, 1) from None


def _unreadable(path: Path, exc: Exception, line: int) -> DataError:
    if isinstance(exc, UnicodeDecodeError):
        return DataError(f"{path} is not UTF-8 text ({exc}); save it as UTF-8 CSV.")
    return DataError(f"{path}, line {line}: not readable as CSV ({exc}).")


def regular_file(path: Path) -> Path:
    if not path.exists():
        raise DataError(f"Dataset file {path} does not exist. Check [data] path.")
    if not path.is_file():  # a pipe would be read once, and a resumed run reads it again
        raise DataError(f"Dataset file {path} is not a regular file; give a CSV file.")
    return path


def opened(path: Path):
    try:
        return open(path, encoding="utf-8-sig", newline="")  # a BOM is not part of a name
    except OSError as exc:
        raise DataError(f"Dataset file {path} cannot be read ({exc}).") from None


def _filled(row: list[str]) -> bool:
    """Whether a row has a cell that is not blank: the header is the first such row (lines of
    spaces before it are not a column named '')."""
    return any(cell.strip() for cell in row)


def _check_header(path: Path, columns: list[str]) -> None:
    seen = set()
    for i, name in enumerate(columns):
        if not name:  # pandas writes its index so (",a,b"), and Excel a trailing delimiter
            raise DataError(f"{path}: column {i + 1} of the header has no name (its header "
                            f"names {', '.join(repr(c) for c in columns[:8])}"
                            f"{', ...' if len(columns) > 8 else ''}); name every column, or "
                            "remove an unnamed one (a row index, a trailing delimiter).")
        if name in seen:
            raise DataError(f"{path}: the header names column {name!r} twice; give each column "
                            "its own name.")
        seen.add(name)


def missing_cell(cell: str) -> bool:
    return cell.lower() in MISSING_CELLS


def number_like(cell: str) -> bool:
    """Whether a cell spells a number, finite or not ('inf' is a number, though no input)."""
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _number(cell: str) -> float | None:
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
