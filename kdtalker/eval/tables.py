"""The paper's result tables: rows of aggregated metrics -> markdown and CSV with the paper's columns.

A row's values may carry `videos` (clips scored), `skipped` ({metric: count}, non-zero only) and `skip_reasons`
({metric: reason}); the skipped videos are left out of that metric's mean, and the tables say so.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any, Mapping, Sequence

# column key -> (header, higher is better, decimals)
COLUMNS: dict[str, tuple[str, bool, int]] = {
    "lse_c": ("LSE-C", True, 3),
    "lse_d": ("LSE-D", False, 3),
    "diversity": ("Diversity", True, 3),
    "fid": ("FID", False, 2),
    "cpbd": ("CPBD", True, 3),
    "csim": ("CSIM", True, 3),
    "fps": ("FPS (gen)", True, 2),
    "fps_wall": ("FPS (wall)", True, 2),
    "beat_align": ("BA", True, 3),
    "diversity_degrees": ("Diversity (deg)", True, 3),
}
PAPER_COLUMNS = ("lse_c", "lse_d", "diversity", "fid", "cpbd", "csim", "fps")
# per-video metric -> its name in the skipped-videos note
METRIC_NAMES = {"lse": "LSE", "diversity": "Diversity", "csim": "CSIM", "beat_align": "BA", "cpbd": "CPBD"}


def _cell(value, decimals: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{decimals}f}"


def skipped_text(values: Mapping[str, Any]) -> str:
    """A row's values -> e.g. "CSIM 2 of 10 (no face); LSE 1 of 10 (too short)" ('' when nothing was skipped)."""
    skipped = values.get("skipped") or {}
    reasons = values.get("skip_reasons") or {}
    total = values.get("videos")
    parts = []
    for metric, count in skipped.items():
        of = f" of {total}" if total is not None else ""
        why = f" ({reasons[metric]})" if reasons.get(metric) else ""
        parts.append(f"{METRIC_NAMES.get(metric, metric)} {count}{of}{why}")
    return "; ".join(parts)


def to_markdown(
    title: str,
    rows: Sequence[tuple[str, Mapping[str, Any]]],
    columns: Sequence[str] = PAPER_COLUMNS,
    first: str = "Method",
) -> str:
    """[(label, {column: value})] -> a markdown table with arrows on the headers (missing values as '-'), then one
    "Skipped videos" line per row that left videos out of a mean."""
    heads = [first] + [f"{COLUMNS[c][0]}{'↑' if COLUMNS[c][1] else '↓'}" for c in columns]
    lines = [f"**{title}**", "", "| " + " | ".join(heads) + " |", "|" + "|".join([" --- "] * len(heads)) + "|"]
    for label, values in rows:
        lines.append("| " + " | ".join([label] + [_cell(values.get(c), COLUMNS[c][2]) for c in columns]) + " |")
    notes = [(label, skipped_text(values)) for label, values in rows]
    notes = [(label, text) for label, text in notes if text]
    if notes:
        lines.append("")
        # one row: no label needed; several: say whose videos were skipped
        lines += [
            f"Skipped videos: {text}" if len(rows) == 1 else f"Skipped videos ({label}): {text}"
            for label, text in notes
        ]
    return "\n".join(lines) + "\n"


def to_csv(
    rows: Sequence[tuple[str, Mapping[str, Any]]], columns: Sequence[str] = PAPER_COLUMNS, first: str = "Method"
) -> str:
    """[(label, {column: value})] -> CSV text (full precision, empty cells for missing values, a Skipped column)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([first] + [COLUMNS[c][0] for c in columns] + ["Skipped"])
    for label, values in rows:
        cells = ["" if values.get(c) is None else repr(float(values[c])) for c in columns]
        writer.writerow([label] + cells + [skipped_text(values)])
    return buf.getvalue()
