"""What every benchmark script does last: print its report and, with --out, write it as JSON."""

from __future__ import annotations

import json
from pathlib import Path


def finish(report: dict, out: Path | None) -> dict:
    """Print `report` and write it to `out` (its folder made if needed) when given; return it."""
    print(json.dumps(report, indent=1))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n")
    return report
