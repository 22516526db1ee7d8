"""Where keys and values sit in TOML source, so errors can say ``line:column``.

``tomllib`` returns plain data without positions. ``SourceMap`` scans the same text once and
records, for every key path such as ``("steps", 1, "channel")``, where its key and its value
start. It understands ``[table]`` and ``[[array.of.tables]]`` headers (array items are
counted from 0, like the parsed lists), dotted keys, inline tables, arrays and every string
form. It assumes the text already parsed with ``tomllib``; on anything it does not follow it
stops quietly and keeps what it found. Lookups fall back to the nearest known parent and
finally to line 1, column 1.
"""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

KeyPath = tuple[str | int, ...]

_BARE_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_SCALAR_END = frozenset(",]}#\n\r")


@dataclass(frozen=True)
class Position:
    """A 1-based line and column in the source text."""

    line: int
    column: int


_START = Position(1, 1)


class SourceMap:
    """Positions of keys, values and table headers in one TOML document."""

    def __init__(self, text: str) -> None:
        self.keys: dict[KeyPath, Position] = {}
        self.values: dict[KeyPath, Position] = {}
        self.headers: dict[KeyPath, Position] = {}
        self._text = text
        self._line_starts = [0] + [i + 1 for i, char in enumerate(text) if char == "\n"]
        self._index = 0
        self._array_lengths: dict[KeyPath, int] = {}
        # on anything unexpected, keep the positions found before the scanner lost its way
        with contextlib.suppress(IndexError, ValueError):
            self._scan_document()

    def key(self, path: Sequence[str | int]) -> Position:
        """Where the key of ``path`` is written (or the nearest parent's)."""
        return self._lookup(path, self.keys, self.values, self.headers)

    def value(self, path: Sequence[str | int]) -> Position:
        """Where the value of ``path`` starts (or the nearest parent's)."""
        return self._lookup(path, self.values, self.keys, self.headers)

    def table(self, path: Sequence[str | int]) -> Position:
        """Where the table at ``path`` opens: its header, else its key (or a parent's)."""
        return self._lookup(path, self.headers, self.keys, self.values)

    def _lookup(self, path: Sequence[str | int], *tables: dict[KeyPath, Position]) -> Position:
        candidate = tuple(path)
        while candidate:
            for table in tables:
                if candidate in table:
                    return table[candidate]
            candidate = candidate[:-1]
        return _START

    # -- scanning -------------------------------------------------------------------------

    def _position(self, index: int) -> Position:
        line = bisect.bisect_right(self._line_starts, index)
        return Position(line, index - self._line_starts[line - 1] + 1)

    def _peek(self, offset: int = 0) -> str:
        index = self._index + offset
        return self._text[index] if index < len(self._text) else ""

    def _skip_blank(self, *, newlines: bool) -> None:
        """Skip spaces, tabs and comments; also newlines when ``newlines`` is true."""
        while self._index < len(self._text):
            char = self._text[self._index]
            if char in " \t" or (newlines and char in "\r\n"):
                self._index += 1
            elif char == "#":
                end = self._text.find("\n", self._index)
                self._index = len(self._text) if end == -1 else end
            else:
                return

    def _scan_document(self) -> None:
        current: KeyPath = ()
        while True:
            self._skip_blank(newlines=True)
            if self._index >= len(self._text):
                return
            if self._peek() == "[":
                current = self._scan_header()
            else:
                self._scan_key_value(current)

    def _scan_header(self) -> KeyPath:
        header_start = self._index
        is_array = self._peek(1) == "["
        self._index += 2 if is_array else 1
        segments = self._scan_key()
        self._index += 2 if is_array else 1
        path: KeyPath = ()
        for position, (name, start) in enumerate(segments):
            path += (name,)
            is_last = position == len(segments) - 1
            if is_last and is_array:
                count = self._array_lengths.get(path, 0)
                self._array_lengths[path] = count + 1
                self.keys.setdefault(path, self._position(start))
                path += (count,)
            elif path in self._array_lengths:
                path += (self._array_lengths[path] - 1,)
            else:
                self.keys.setdefault(path, self._position(start))
        self.headers[path] = self._position(header_start)
        self.keys.setdefault(path, self._position(segments[-1][1]))
        self.values.setdefault(path, self._position(header_start))
        return path

    def _scan_key(self) -> list[tuple[str, int]]:
        """Read a (dotted) key; return each segment with the index where it starts."""
        segments: list[tuple[str, int]] = []
        while True:
            self._skip_blank(newlines=False)
            start = self._index
            char = self._peek()
            if char in ("'", '"'):
                segments.append((self._scan_string(), start))
            else:
                while self._peek() in _BARE_KEY_CHARS and self._peek():
                    self._index += 1
                if self._index == start:
                    raise ValueError("expected a key")
                segments.append((self._text[start : self._index], start))
            self._skip_blank(newlines=False)
            if self._peek() != ".":
                return segments
            self._index += 1

    def _scan_key_value(self, table: KeyPath) -> None:
        segments = self._scan_key()
        path = table
        for name, start in segments:
            path += (name,)
            self.keys.setdefault(path, self._position(start))
        self._skip_blank(newlines=False)
        if self._peek() != "=":
            raise ValueError("expected '='")
        self._index += 1
        self._skip_blank(newlines=False)
        self._scan_value(path)

    def _scan_value(self, path: KeyPath) -> None:
        self.values[path] = self._position(self._index)
        char = self._peek()
        if char in ("'", '"'):
            self._scan_string()
        elif char == "[":
            self._scan_array(path)
        elif char == "{":
            self._scan_inline_table(path)
        else:
            while self._peek() and self._peek() not in _SCALAR_END:
                self._index += 1

    def _scan_array(self, path: KeyPath) -> None:
        self._index += 1
        item = 0
        while True:
            self._skip_blank(newlines=True)
            char = self._peek()
            if char == "]":
                self._index += 1
                return
            if char == ",":
                self._index += 1
                continue
            if not char:
                raise ValueError("unterminated array")
            self.keys.setdefault((*path, item), self._position(self._index))
            self._scan_value((*path, item))
            item += 1

    def _scan_inline_table(self, path: KeyPath) -> None:
        self._index += 1
        while True:
            self._skip_blank(newlines=True)
            char = self._peek()
            if char == "}":
                self._index += 1
                return
            if char == ",":
                self._index += 1
                continue
            if not char:
                raise ValueError("unterminated inline table")
            self._scan_key_value(path)

    def _scan_string(self) -> str:
        """Read any TOML string form and return its raw content (escapes left as written)."""
        quote = self._peek()
        delimiter = quote * 3 if self._text.startswith(quote * 3, self._index) else quote
        self._index += len(delimiter)
        start = self._index
        while True:
            if self._index >= len(self._text):
                raise ValueError("unterminated string")
            if quote == '"' and self._peek() == "\\":
                self._index += 2
                continue
            if self._text.startswith(delimiter, self._index):
                if len(delimiter) == 3:
                    # up to two quotes may close a multi-line string as content
                    while self._peek(3) == quote:
                        self._index += 1
                content = self._text[start : self._index]
                self._index += len(delimiter)
                return content
            self._index += 1
