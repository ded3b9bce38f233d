"""The benchmark's table: per row the measured value, its baseline, their ratio, the target and pass/fail."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    name: str
    measured: float
    baseline: float | None  # measured in the same run; None where the target is absolute
    unit: str
    target: str  # e.g. "≤ 1.2×", "≥ 2×", "≤ 500 MB", "—"
    passed: bool | None  # None: no target, the row only informs
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return None if self.baseline in (None, 0) else self.measured / self.baseline


def ratio_row(
    name: str, measured: float, baseline: float, unit: str, target: float | None, higher_is_better: bool, note: str = ""
) -> Row:
    """A row judged by measured / baseline against `target` (None: informational)."""
    ratio = measured / baseline if baseline else float("nan")
    if target is None:
        return Row(name, measured, baseline, unit, "—", None, note)
    passed = ratio >= target if higher_is_better else ratio <= target
    return Row(name, measured, baseline, unit, f"{'≥' if higher_is_better else '≤'} {target:g}×", passed, note)


def absolute_row(
    name: str, measured: float, baseline: float | None, unit: str, target: str, passed: bool | None, note: str = ""
) -> Row:
    """A row judged by the measured value itself; a baseline, where there is one, gives the ratio context."""
    return Row(name, measured, baseline, unit, target, passed, note)


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    return f"{value:,.3g} {unit}".strip() if abs(value) < 1000 else f"{value:,.0f} {unit}".strip()


def table(rows: list[Row]) -> str:
    """A Markdown table, so it pastes into docs/performance.md as is."""
    header = ["benchmark", "measured", "baseline", "ratio", "target", "result"]
    lines = [header]
    for row in rows:
        ratio = "—" if row.ratio is None else f"{row.ratio:.2f}×"
        result = "—" if row.passed is None else ("pass" if row.passed else "MISS")
        lines.append([row.name, _number(row.measured, row.unit), _number(row.baseline, row.unit), ratio, row.target, result])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) + " |" for line in lines]
    out.insert(1, "| " + " | ".join("-" * width for width in widths) + " |")
    notes = [f"- {row.name}: {row.note}" for row in rows if row.note]
    return "\n".join(out + (["", *notes] if notes else []))
