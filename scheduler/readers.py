"""Streaming readers for the files that `tact recipients import` and `tact events import` take.

Rows come out one at a time, in constant memory, each with the physical line on which it
starts, so a report can point at ``recipients.csv:14``. A row that cannot be read becomes a
`RawRow` with an ``error`` and the reader carries on with the next one. Files are UTF-8, with
or without a byte-order mark; blank lines are skipped.

- CSV: the first non-blank line is the header (names stripped of surrounding spaces); each
  row maps header names to cell strings. Quoted cells may span lines.
- JSON lines: one JSON object per line.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

FileFormat = Literal["csv", "jsonl"]

EXTENSIONS: dict[str, FileFormat] = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json-lines": "jsonl",
}
_UNDECODABLE = re.compile("[\udc80-\udcff]")
_NOT_UTF8 = "not valid UTF-8 text"


@dataclass(frozen=True, slots=True)
class RawRow:
    """One row of an input file: its data, or why it could not be read (``error``)."""

    line: int
    data: dict[str, Any] | None
    error: str | None


def detect_format(path: Path | str, format: Literal["csv", "jsonl", "auto"] = "auto") -> FileFormat:
    """Return the file's format: ``format`` itself, or for ``auto`` the one its extension names."""
    if format != "auto":
        return format
    suffix = Path(path).suffix.lower()
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    known = ", ".join(EXTENSIONS)
    raise ValueError(
        f"cannot tell the format of {str(path)!r} from its extension {suffix or '(none)'!r}: "
        f"use one of {known}, or name the format (csv or jsonl)"
    )


def read_rows(path: Path | str, *, format: Literal["csv", "jsonl", "auto"] = "auto") -> Iterator[RawRow]:
    """Stream the rows of a CSV or JSON-lines file.

    Raises ``ValueError`` at once when ``auto`` cannot tell the format, and
    ``FileNotFoundError`` when the file does not exist.
    """
    file_path = Path(path)
    resolved = detect_format(file_path, format)
    if not file_path.exists():
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(file_path))
    if file_path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(file_path))
    return _read_csv(file_path) if resolved == "csv" else _read_jsonl(file_path)


def count_rows(path: Path | str, *, format: Literal["csv", "jsonl", "auto"] = "auto") -> int:
    """Count the data rows cheaply, for a progress bar's total.

    Counts lines (less the header for CSV), so blank lines and cells spanning lines make it
    an overestimate.
    """
    resolved = detect_format(path, format)
    lines = 0
    last_byte = b"\n"
    with Path(path).open("rb") as handle:
        while chunk := handle.read(1 << 20):
            lines += chunk.count(b"\n")
            last_byte = chunk[-1:]
    if last_byte != b"\n":
        lines += 1
    if resolved == "csv":
        lines = max(lines - 1, 0)
    return lines


def _read_csv(path: Path) -> Iterator[RawRow]:
    # newline="" lets the csv module see quoted line breaks; undecodable bytes become lone
    # surrogates so that one bad row does not stop the file.
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        reader = csv.reader(handle, strict=True)
        header: list[str] | None = None
        while True:
            start = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield RawRow(start, None, f"malformed CSV: {exc}")
                if header is None or reader.line_num < start:
                    return
                continue
            if all(not cell.strip() for cell in cells):
                continue
            if any(_UNDECODABLE.search(cell) for cell in cells):
                yield RawRow(start, None, _NOT_UTF8)
                if header is None:
                    return
                continue
            if header is None:
                header = [name.strip() for name in cells]
                problem = _header_problem(header)
                if problem:
                    yield RawRow(start, None, problem)
                    return
                continue
            if len(cells) != len(header):
                yield RawRow(
                    start,
                    None,
                    f"expected {len(header)} columns as in the header, found {len(cells)}",
                )
                continue
            yield RawRow(start, dict(zip(header, cells, strict=True)), None)


def _header_problem(header: list[str]) -> str | None:
    seen: set[str] = set()
    for position, name in enumerate(header, start=1):
        if not name:
            return f"header: column {position} has no name"
        if name in seen:
            return f"header: column {name!r} appears more than once"
        seen.add(name)
    return None


def _read_jsonl(path: Path) -> Iterator[RawRow]:
    with path.open(encoding="utf-8-sig", errors="surrogateescape") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            if _UNDECODABLE.search(line):
                yield RawRow(line_number, None, _NOT_UTF8)
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                yield RawRow(line_number, None, f"invalid JSON: {exc.msg} (column {exc.colno})")
                continue
            except (ValueError, RecursionError) as exc:
                yield RawRow(line_number, None, f"invalid JSON: {exc}")
                continue
            if not isinstance(value, dict):
                yield RawRow(line_number, None, f"expected a JSON object, found {_kind(value)}")
                continue
            yield RawRow(line_number, value, None)


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"
