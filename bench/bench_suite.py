"""The test suite's own figures, as the README quotes them: `make test`'s pytest command timed end to end, then
its fast layer (`-m "not slow"`), written to bench/results/suite.json with the 15 slowest tests.

    python bench/bench_suite.py                     # both runs: about 20 minutes on 2 quiet cores
    python bench/bench_suite.py --one-process       # also both again in one process (the README's comparison)
    python bench/bench_suite.py --out /tmp/s tests/test_metrics.py   # a selection, written elsewhere

Run it on quiet cores: a tiny model's step waits whenever another job holds a core, so a loaded machine's
times say more about the load than about the suite.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from record import RESULTS, record


def make_workers() -> list[str]:
    """`make test`'s xdist options, read from the Makefile's XDIST line so the two cannot drift apart."""
    for line in (ROOT / "Makefile").read_text().splitlines():
        if line.startswith("XDIST :="):
            return line.split(":=", 1)[1].split()
    raise SystemExit("Makefile: no `XDIST :=` line")


WORKERS = make_workers()
SUMMARY = re.compile(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed)")
DURATION = re.compile(r"^([\d.]+)s (setup|call|teardown)\s+(?:tests/)?(.+?)\s*$")


def minutes(seconds: float) -> str:
    """The README's form: '15 min 11 s'."""
    whole = round(seconds)
    return f"{whole // 60} min {whole % 60} s"


def pytest(args: list[str]) -> dict:
    """Run pytest with these arguments; its counts, the 15 slowest phases and the wall time."""
    command = [sys.executable, "-m", "pytest", *args, "--durations=15", "-p", "no:cacheprovider"]
    print("$", " ".join(command), flush=True)
    started = time.time()
    done = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - started
    sys.stdout.write(done.stdout[-3000:])
    lines = done.stdout.splitlines()
    summary = next((line for line in reversed(lines) if re.search(r"\d+ (passed|failed|deselected|error)", line)), "")
    counts = {kind.rstrip("s") if kind.startswith("error") else kind: int(n) for n, kind in SUMMARY.findall(summary)}
    durations = [[round(float(m.group(1))), m.group(2), m.group(3)] for m in map(DURATION.match, lines) if m]
    return {"exit": done.returncode, "wall_s": round(wall), "counts": counts, "durations": durations[:15]}


def gpu_tests(tests: list[str]) -> int:
    """The tests marked gpu, which the CPU runs deselect (under xdist pytest's summary does not count them)."""
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "gpu", "-p", "no:cacheprovider", *tests]
    done = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True)
    return sum("::" in line for line in done.stdout.splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tests", nargs="*", help="test files or ids (and any pytest option) to run instead of the whole suite")
    parser.add_argument("--one-process", action="store_true", help="also time both runs in one pytest process")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for suite.json")
    args, extra = parser.parse_known_args()
    args.tests += extra

    full = pytest([*WORKERS, *args.tests])
    fast = pytest([*WORKERS, "-m", "not slow", *args.tests])
    values = {
        "passed": full["counts"].get("passed", 0), "failed": full["counts"].get("failed", 0),
        "skipped": full["counts"].get("skipped", 0), "gpu_deselected": gpu_tests(args.tests),
        "wall": minutes(full["wall_s"]), "wall_s": full["wall_s"],
        "fast_passed": fast["counts"].get("passed", 0), "fast_wall": minutes(fast["wall_s"]), "fast_wall_s": fast["wall_s"],
    }
    if args.one_process:
        values["one_process_wall"] = minutes(pytest(args.tests)["wall_s"])
        values["one_process_fast_wall"] = minutes(pytest(["-m", "not slow", *args.tests])["wall_s"])
    values["durations"] = full["durations"]
    record("suite", values, folder=args.out,
           note=f"{sys.executable} -m pytest {' '.join(WORKERS)} (make test), then with -m 'not slow'")
    print("\nREADME's durations table:\n| s | phase | test |\n| ---: | --- | --- |")
    for seconds, phase, test in values["durations"]:
        print(f"| {seconds} | {phase} | `{test}` |")
    if full["exit"] or fast["exit"]:
        sys.exit(f"pytest exited {full['exit']} (whole suite) and {fast['exit']} (fast layer): the figures include failures")


if __name__ == "__main__":
    main()
