"""One corpus of malformed inputs for every entry point, each case with its verdict.

Each case is the bytes of a CSV file built from the first 20 demo rows (label included: the
`validate` stage needs it, scoring ignores it as an extra column). Its verdict is one of:
- `rejected`: these rows (1-based record numbers) are rejected, each reason naming this column;
  every other row is scored (an empty dict: all rows are accepted);
- `error`: the file cannot be used at all; the message matches this pattern and, from a command,
  names the file and exits with status 2. `rest_error` is the pattern where MLflow's REST server
  parses the body before the model sees it and says it its own way.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.conftest import ROOT

N_ROWS = 20
_LINES = (ROOT / "data" / "raw" / "breast_cancer.csv").read_text().splitlines()[: N_ROWS + 1]
HEADER = _LINES[0].split(",")


@dataclass(frozen=True)
class Case:
    name: str
    content: bytes
    rejected: dict[int, str] | None = None
    error: str | None = None
    rest_error: str | None = None

    def __str__(self) -> str:
        return self.name


def _csv(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def _with_cells(cells: dict[tuple[int, str], str]) -> bytes:
    """The base rows with some cells replaced by raw text: {(row, column): text}."""
    lines = list(_LINES)
    for (row, column), text in cells.items():
        fields = lines[row].split(",")
        fields[HEADER.index(column)] = text
        lines[row] = ",".join(fields)
    return _csv(lines)


def _columns(edit) -> bytes:
    """The base rows with every line's fields passed through `edit(fields, is_header)`."""
    return _csv([",".join(edit(line.split(","), i == 0)) for i, line in enumerate(_LINES)])


AREA = HEADER.index("mean_area")

CASES = [
    Case("inf", _with_cells({(3, "mean_radius"): "inf"}), rejected={3: "mean_radius"}),
    Case("minus_inf", _with_cells({(5, "mean_texture"): "-inf"}), rejected={5: "mean_texture"}),
    Case("1e309_text", _with_cells({(2, "mean_area"): "1e309", (7, "worst_area"): "-1E309"}), rejected={2: "mean_area", 7: "worst_area"}),
    Case("beyond_float_limit", _with_cells({(4, "worst_perimeter"): "1e308"}), rejected={4: "worst_perimeter"}),
    Case("nan_not_allowed", _with_cells({(6, "mean_smoothness"): "NaN", (8, "mean_symmetry"): ""}), rejected={6: "mean_smoothness", 8: "mean_symmetry"}),
    Case("string_in_numeric", _with_cells({(9, "mean_radius"): "large"}), rejected={9: "mean_radius"}),
    Case("thousands_separator", _with_cells({(10, "mean_area"): '"1,001.0"'}), rejected={10: "mean_area"}),
    Case("truncated_last_line", _csv([*_LINES[:-1], ",".join(_LINES[-1].split(",")[:6])]), rejected={N_ROWS: "mean_concavity"}),
    Case("bom", b"\xef\xbb\xbf" + _csv(_LINES), rejected={}),
    Case("extra_column", _columns(lambda f, header: [*f, "note" if header else "seen twice"]), rejected={}),
    Case(
        "missing_column",
        _columns(lambda f, header: f[:AREA] + f[AREA + 1:]),
        error=r"missing required column\(s\) mean_area",
    ),
    Case(
        "duplicate_header",
        _columns(lambda f, header: [("mean_radius" if header and name == "mean_texture" else name) for name in f]),
        error=r"duplicate column name\(s\) mean_radius",
        rest_error=r"missing required column\(s\) mean_texture",  # pandas renamed the second one mean_radius.1
    ),
    Case("empty_file", b"", error="is empty: expected a header row and data rows", rest_error="No columns to parse"),
    Case("header_only", _csv(_LINES[:1]), error="has no data rows"),
    Case("binary", bytes(range(255, -1, -1)) * 8, error="UTF-8"),
    Case("non_utf8", _with_cells({(11, "mean_radius"): "14.2"}).replace(b"14.2", "14\u00b72".encode("latin-1")), error="UTF-8"),
]
