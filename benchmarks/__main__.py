"""``python -m benchmarks [--quick] [--only NAME ...]``: run the benchmarks, print JSON, save results/latest.json."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

from benchmarks import BENCHMARKS
from benchmarks.common import RunContext
from mpesa.sandbox.keys import load_or_create_private_key

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the ``with`` blocks that stop the simulators


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small smoke run (200 pending, 1 s phases)")
    parser.add_argument(
        "--only", action="append", choices=sorted(BENCHMARKS), metavar="NAME", help=f"one of {sorted(BENCHMARKS)}"
    )
    parser.add_argument(
        "--database",
        choices=("auto", "sqlite", "postgres", "both"),
        default="auto",
        help="for checkout: which database (auto: both when PostgreSQL answers on 127.0.0.1:5432)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="where the JSON is also written")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)

    names = args.only or list(BENCHMARKS)
    started = time.monotonic()
    report: dict[str, Any] = {
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "benchmarks": {},
    }
    with tempfile.TemporaryDirectory(prefix="mpesa-bench-") as workdir:
        key = Path(workdir) / "private_key.pem"
        load_or_create_private_key(key)  # once, so every simulator starts without generating RSA 4096
        ctx = RunContext(quick=args.quick, workdir=Path(workdir), private_key=key, database=args.database)
        for name in names:
            t0 = time.monotonic()
            try:
                figures = BENCHMARKS[name](ctx)
            except Exception as exc:
                traceback.print_exc(file=sys.stderr)
                figures = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            figures["benchmark_seconds"] = round(time.monotonic() - t0, 2)
            report["benchmarks"][name] = figures
    report["total_seconds"] = round(time.monotonic() - started, 2)
    report["ok"] = all(b.get("ok") for b in report["benchmarks"].values())
    text = json.dumps(report, indent=2)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
