"""The paper's result tables: rows of aggregated metrics -> markdown and CSV with the paper's columns."""

from __future__ import annotations

import csv
import io
import math
from typing import Mapping, Sequence

# column key -> (header, higher is better, decimals)
COLUMNS: dict[str, tuple[str, bool, int]] = {
    "lse_c": ("LSE-C", True, 3),
    "lse_d": ("LSE-D", False, 3),
    "diversity": ("Diversity", True, 3),
    "fid": ("FID", False, 2),
    "cpbd": ("CPBD", True, 3),
    "csim": ("CSIM", True, 3),
    "fps": ("FPS", True, 2),
    "beat_align": ("BA", True, 3),
    "diversity_degrees": ("Diversity (deg)", True, 3),
}
PAPER_COLUMNS = ("lse_c", "lse_d", "diversity", "fid", "cpbd", "csim", "fps")


def _cell(value, decimals: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{decimals}f}"


def to_markdown(
    title: str,
    rows: Sequence[tuple[str, Mapping[str, float]]],
    columns: Sequence[str] = PAPER_COLUMNS,
    first: str = "Method",
) -> str:
    """[(label, {column: value})] -> a markdown table with arrows on the headers (missing values as '-')."""
    heads = [first] + [f"{COLUMNS[c][0]}{'↑' if COLUMNS[c][1] else '↓'}" for c in columns]
    lines = [f"**{title}**", "", "| " + " | ".join(heads) + " |", "|" + "|".join([" --- "] * len(heads)) + "|"]
    for label, values in rows:
        lines.append("| " + " | ".join([label] + [_cell(values.get(c), COLUMNS[c][2]) for c in columns]) + " |")
    return "\n".join(lines) + "\n"


def to_csv(
    rows: Sequence[tuple[str, Mapping[str, float]]], columns: Sequence[str] = PAPER_COLUMNS, first: str = "Method"
) -> str:
    """[(label, {column: value})] -> CSV text (full precision, empty cells for missing values)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([first] + [COLUMNS[c][0] for c in columns])
    for label, values in rows:
        writer.writerow([label] + ["" if values.get(c) is None else repr(float(values[c])) for c in columns])
    return buf.getvalue()
