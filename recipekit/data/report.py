"""The human-readable form of a run's data report (the same dict is written as data_report.json)."""

from __future__ import annotations

EFFECTS = ("removed", "changed", "added", "moved")


def format_report(report: dict) -> str:
    lines = ["data report"]
    if report.get("sources"):
        lines.append("  sources:")
        for s in report["sources"]:
            lines.append(f"    {s['source']:<30} {s['rows_read']:>9,} read {s['rows_used']:>9,} used  {s['share']:6.1%} of train")
    for note in report.get("notes", []):
        lines.append(f"  note: {note}")
    lines.append(f"  {'step':<20} {'split':<10} {'rows in':>9} {'rows out':>9} {'count':>16}  reason")
    for row in report.get("steps", []):
        effect = next((e for e in EFFECTS if e in row), None)
        count = f"{row[effect]:,} {effect}" if effect else ""
        reason = row.get("reason", "")
        extra = {k: v for k, v in row.items() if k not in {"step", "split", "rows_in", "rows_out", "reason", *EFFECTS}}
        if "reasons" in extra:
            reason = "; ".join(f"{k}: {v:,}" for k, v in extra.pop("reasons").items())
        if extra:
            reason += " (" + ", ".join(f"{k} {v}" for k, v in extra.items()) + ")"
        lines.append(f"  {row['step']:<20} {row['split']:<10} {rows(row['rows_in']):>9} {rows(row['rows_out']):>9} {count:>16}  {reason}")
    for split, counts in report.get("labels", {}).items():
        total = sum(counts.values()) or 1
        shown = ", ".join(f"{name} {n:,} ({n / total:.1%})" for name, n in counts.items())
        lines.append(f"  labels {split}: {shown}")
    tokens = report.get("tokens")
    if tokens:
        # The pretraining heads cut their corpus into blocks: a longer text continues in the next block when packed.
        limit = f"block_size {tokens['block_size']}" if "block_size" in tokens else f"max_length {tokens['max_length']}"
        cut = "longer than one block" if tokens.get("packing") else "truncated"
        for split, s in tokens["splits"].items():
            if s:
                lines.append(
                    f"  tokens {split}{' (first ' + format(s['sample_rows'], ',') + ' rows of the stream)' if 'sample_rows' in s else ''}: p50 {s['p50']} p90 {s['p90']} p95 {s['p95']} p99 {s['p99']} max {s['max']}; "
                    f"{s['truncated']:.1%} {cut if 'windows' not in s else 'cut into windows'} at {limit}"
                    + (f" ({s['windows']:,} windows)" if "windows" in s else "")
                )
    return "\n".join(lines)


def rows(n) -> str:
    return "streamed" if n is None else f"{n:,}"  # a streamed split is counted by nothing before training reads it
