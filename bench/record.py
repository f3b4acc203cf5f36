"""One results file per benchmark: bench/results/<name>.json, the source of every figure the docs quote.

A file holds the figures (`values`), the UTC date, the machine and the command that measured them. The docs
quote a figure with a marker beside it, `<!-- result: <name>.json#<key> -->` (in a recipe's header comment
`[result: <name>.json#<key>]`), and tests/test_doc_numbers.py checks each quoted figure against its file.
A figure copied from an earlier documented measurement, not re-measured, is written with `transcribed`
saying where it was taken from; rerunning the benchmark replaces it with a measured file.
"""
import datetime
import json
import os
import platform
import shlex
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    """The CPU model, the cores this process may use, and the GPU when torch sees one."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {len(os.sched_getaffinity(0))} cores"
    torch = sys.modules.get("torch")  # imported by the benchmark already, or not needed: no import here
    if torch is not None and torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name(0)}"
    return text


def record(name: str, values: dict, command: str | None = None, note: str | None = None,
           transcribed: str | None = None, folder: Path = RESULTS) -> Path:
    """Write <folder>/<name>.json; `command` defaults to this process's own command line."""
    body = {
        "name": name,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "machine": machine(),
        "command": command or shlex.join(["python", *sys.argv]),
        **({"note": note} if note else {}),
        **({"transcribed": transcribed} if transcribed else {}),
        "values": values,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    # numpy and torch scalars, as benchmarks compute them, are written as plain numbers
    path.write_text(json.dumps(body, indent=2, ensure_ascii=False, default=lambda v: v.item() if hasattr(v, "item") else str(v)) + "\n")
    print(f"wrote {path}")
    return path
