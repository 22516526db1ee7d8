"""Tests for the streaming CSV and JSON-lines readers."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.readers import RawRow, count_rows, detect_format, read_rows


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    """Write a file byte for byte (no newline translation) and return its path."""
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def test_csv_rows_map_header_to_cells_from_line_two(tmp_path: Path) -> None:
    """Each CSV data row maps the header's names to its cells; the first starts on line 2."""
    path = write(tmp_path, "r.csv", "id,email\nr1,a@example.com\nr2,\n")
    assert list(read_rows(path)) == [
        RawRow(2, {"id": "r1", "email": "a@example.com"}, None),
        RawRow(3, {"id": "r2", "email": ""}, None),
    ]


def test_csv_byte_order_mark_is_dropped(tmp_path: Path) -> None:
    """A UTF-8 byte-order mark does not end up in the first column's name."""
    path = write(tmp_path, "r.csv", "\ufeffid,name\nr1,Zoë\n")
    assert [row.data for row in read_rows(path)] == [{"id": "r1", "name": "Zoë"}]


def test_csv_multi_line_cell_keeps_line_numbers(tmp_path: Path) -> None:
    """A quoted cell spanning lines keeps its break and later rows keep their physical line."""
    path = write(tmp_path, "r.csv", 'id,note\nr1,"first\nsecond"\nr2,plain\n')
    rows = list(read_rows(path))
    assert [(row.line, row.data) for row in rows] == [
        (2, {"id": "r1", "note": "first\nsecond"}),
        (4, {"id": "r2", "note": "plain"}),
    ]


def test_csv_blank_lines_are_skipped(tmp_path: Path) -> None:
    """Blank lines and rows of empty cells are skipped without shifting line numbers."""
    path = write(tmp_path, "r.csv", "\nid,name\r\n\r\nr1,A\r\n,\r\n  \r\nr2,B\r\n")
    assert [(row.line, row.data) for row in read_rows(path)] == [
        (4, {"id": "r1", "name": "A"}),
        (7, {"id": "r2", "name": "B"}),
    ]


def test_csv_wrong_column_count_is_an_error_row(tmp_path: Path) -> None:
    """A row with too few or too many cells is reported and reading continues."""
    path = write(tmp_path, "r.csv", "id,name\nr1\nr2,B,extra\nr3,C\n")
    rows = list(read_rows(path))
    assert [(row.line, row.data is None) for row in rows] == [(2, True), (3, True), (4, False)]
    assert rows[0].error == "expected 2 columns as in the header, found 1"
    assert rows[2] == RawRow(4, {"id": "r3", "name": "C"}, None)


def test_csv_malformed_quoting_is_an_error_row(tmp_path: Path) -> None:
    """Text after a closing quote is reported and the following rows are still read."""
    path = write(tmp_path, "r.csv", 'id,name\nr1,"A"x\nr2,B\n')
    rows = list(read_rows(path))
    assert rows[0].line == 2
    assert rows[0].error is not None
    assert rows[0].error.startswith("malformed CSV")
    assert rows[1] == RawRow(3, {"id": "r2", "name": "B"}, None)


def test_csv_unterminated_quote_is_an_error_row(tmp_path: Path) -> None:
    """A quote left open until the end of the file is reported on the line it opens."""
    path = write(tmp_path, "r.csv", 'id,name\nr1,A\nr2,"B\nr3,C\n')
    rows = list(read_rows(path))
    assert rows[0] == RawRow(2, {"id": "r1", "name": "A"}, None)
    assert rows[1].line == 3
    assert rows[1].error is not None
    assert len(rows) == 2


def test_csv_header_names_are_stripped_and_must_be_unique(tmp_path: Path) -> None:
    """Header names lose surrounding spaces; a repeated name is one error row and nothing else."""
    stripped = write(tmp_path, "a.csv", " id , name \nr1,A\n")
    assert [row.data for row in read_rows(stripped)] == [{"id": "r1", "name": "A"}]
    repeated = write(tmp_path, "b.csv", "id,name,name\nr1,A,B\n")
    assert list(read_rows(repeated)) == [RawRow(1, None, "header: column 'name' appears more than once")]


def test_csv_header_without_a_name_is_an_error(tmp_path: Path) -> None:
    """A header cell with no name is reported with its position."""
    path = write(tmp_path, "r.csv", "id,,name\nr1,x,A\n")
    assert list(read_rows(path)) == [RawRow(1, None, "header: column 2 has no name")]


def test_csv_row_with_bad_utf8_is_an_error_row(tmp_path: Path) -> None:
    """A row holding bytes that are not UTF-8 is reported; the next row is still read."""
    path = write(tmp_path, "r.csv", b"id,name\nr1,Zo\xeb\nr2,B\n")
    assert list(read_rows(path)) == [
        RawRow(2, None, "not valid UTF-8 text"),
        RawRow(3, {"id": "r2", "name": "B"}, None),
    ]


def test_empty_csv_yields_nothing(tmp_path: Path) -> None:
    """An empty file and a header-only file have no rows."""
    assert list(read_rows(write(tmp_path, "a.csv", ""))) == []
    assert list(read_rows(write(tmp_path, "b.csv", "id,name\n"))) == []


def test_jsonl_bad_line_in_the_middle(tmp_path: Path) -> None:
    """A line of bad JSON is an error row and the lines around it are still read."""
    path = write(tmp_path, "e.jsonl", '{"id": "e1"}\n{"id": \n{"id": "e3"}\n')
    rows = list(read_rows(path))
    assert rows[0] == RawRow(1, {"id": "e1"}, None)
    assert rows[1].line == 2
    assert rows[1].data is None
    assert rows[1].error is not None
    assert rows[1].error.startswith("invalid JSON")
    assert rows[2] == RawRow(3, {"id": "e3"}, None)


def test_jsonl_non_object_lines_are_errors(tmp_path: Path) -> None:
    """A JSON value that is not an object is reported by kind."""
    path = write(tmp_path, "e.ndjson", '[1, 2]\n"text"\n7\nnull\n')
    assert [row.error for row in read_rows(path)] == [
        "expected a JSON object, found an array",
        "expected a JSON object, found a string",
        "expected a JSON object, found a number",
        "expected a JSON object, found null",
    ]


def test_jsonl_blank_lines_bom_and_crlf(tmp_path: Path) -> None:
    """A BOM, CRLF endings and blank lines are handled and numbering stays physical."""
    path = write(tmp_path, "e.jsonl", '\ufeff{"id": "e1"}\r\n\r\n   \r\n{"id": "e2"}')
    assert list(read_rows(path)) == [RawRow(1, {"id": "e1"}, None), RawRow(4, {"id": "e2"}, None)]


def test_jsonl_line_with_bad_utf8_is_an_error_row(tmp_path: Path) -> None:
    """A line holding bytes that are not UTF-8 is reported; other lines are read."""
    path = write(tmp_path, "e.jsonl", b'{"n": "\xff"}\n{"n": "ok"}\n')
    assert list(read_rows(path)) == [
        RawRow(1, None, "not valid UTF-8 text"),
        RawRow(2, {"n": "ok"}, None),
    ]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a.csv", "csv"), ("a.CSV", "csv"), ("a.jsonl", "jsonl"), ("a.ndjson", "jsonl")],
)
def test_format_follows_the_extension(name: str, expected: str) -> None:
    """The auto format is chosen from the file extension, in any case."""
    assert detect_format(Path(name)) == expected


def test_json_lines_extension_is_recognised() -> None:
    """The .json-lines extension means JSON lines."""
    assert detect_format("events.json-lines") == "jsonl"


def test_unknown_extension_raises_at_once(tmp_path: Path) -> None:
    """An unknown extension raises ValueError when read_rows is called, naming the choices."""
    path = write(tmp_path, "data.txt", "id\nr1\n")
    with pytest.raises(ValueError, match=r"\.txt.*\.csv"):
        read_rows(path)


def test_explicit_format_overrides_the_extension(tmp_path: Path) -> None:
    """An explicit format reads a file whatever its extension."""
    path = write(tmp_path, "data.txt", '{"id": "e1"}\n')
    assert list(read_rows(path, format="jsonl")) == [RawRow(1, {"id": "e1"}, None)]


def test_missing_file_raises_at_once(tmp_path: Path) -> None:
    """A missing file raises FileNotFoundError when read_rows is called."""
    with pytest.raises(FileNotFoundError):
        read_rows(tmp_path / "absent.csv")


def test_count_rows_counts_data_lines(tmp_path: Path) -> None:
    """count_rows counts lines, less the CSV header, with or without a final newline."""
    assert count_rows(write(tmp_path, "a.csv", "id\nr1\nr2\n")) == 2
    assert count_rows(write(tmp_path, "b.csv", "id\nr1\nr2")) == 2
    assert count_rows(write(tmp_path, "c.jsonl", "{}\n{}\n{}")) == 3
    assert count_rows(write(tmp_path, "d.csv", "")) == 0


def test_count_rows_may_overestimate_multi_line_cells(tmp_path: Path) -> None:
    """count_rows is an upper bound when a cell spans lines."""
    path = write(tmp_path, "a.csv", 'id,note\nr1,"a\nb"\n')
    assert count_rows(path) == 2
    assert len(list(read_rows(path))) == 1
