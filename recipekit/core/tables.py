"""Markdown tables with numbers aligned and shown at a readable precision (reports, predict, cv, compare, sweep)."""

from __future__ import annotations

import math


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _scientific(value: float) -> str:
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent):+03d}"


def format_values(values: list) -> list[str]:
    """Values that belong together (a column, or a row of one quantity) in one format chosen for them.

    Rates such as 1e-5 in scientific notation, metrics with four decimals, times and counts with fewer;
    a non-zero value is never shown as 0.0000.
    """
    floats = [abs(v) for v in values if _is_number(v) and not isinstance(v, int) and not math.isnan(v) and v != 0]
    # Learning rates (1e-5 .. 1e-3) are small and span decades; a calibration error of 0.004 is neither.
    if floats and min(floats) < 1e-3 and max(floats) < 0.01:
        style = "scientific"
    else:
        top = max(floats, default=0.0)
        style = 4 if top < 100 else 2 if top < 10_000 else 0
    out = []
    for v in values:
        if v is None:
            out.append("undefined")
        elif isinstance(v, float) and math.isnan(v):  # NaN: pandas' empty cell
            out.append("")
        elif not _is_number(v) or isinstance(v, int):
            out.append(str(v))
        elif style == "scientific" or (v != 0 and abs(v) < 0.5 * 10 ** -style):
            out.append("0" if v == 0 else _scientific(v))
        else:
            out.append(f"{v:.{style}f}")
    return out


def markdown_table(header: list[str], rows: list[list], by: str = "column") -> list[str]:
    """A markdown table whose numbers are formatted per column (`by="column"`), or per row when each row is one quantity."""
    rows = [list(r) for r in rows]
    if by == "row":
        cells = [[r[0] if isinstance(r[0], str) else format_values([r[0]])[0], *format_values(r[1:])] if r else [] for r in rows]
    else:
        columns = [format_values([r[i] for r in rows]) for i in range(len(header))]
        cells = [[columns[i][j] for i in range(len(header))] for j in range(len(rows))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return lines
