"""Strip notebook outputs before committing: `python scripts/strip_notebooks.py notebooks/*.ipynb` (or `make strip`).

Outputs, execution counts and run metadata go. Kept: cells tagged by a `# NBVAL_CHECK_OUTPUT` line keep their
text outputs, which nbval compares against (deterministic values only: shapes, counts, fixed numbers).
"""

from __future__ import annotations

import sys

import nbformat

CHECK = "NBVAL_CHECK_OUTPUT"


def strip(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    for cell in nb.cells:
        cell.get("metadata", {}).pop("execution", None)
        cell.get("metadata", {}).pop("papermill", None)
        if cell.cell_type != "code":
            continue
        cell.execution_count = None
        if CHECK in cell.source:
            cell.outputs = [o for o in cell.outputs if o.output_type == "stream" and o.get("name") == "stdout"
                            or o.output_type == "execute_result"]
            for o in cell.outputs:
                if o.output_type == "execute_result":
                    o.execution_count = None
                    o.data = {k: v for k, v in o.data.items() if k == "text/plain"}
        else:
            cell.outputs = []
    for key in ("papermill", "widgets"):
        nb.metadata.pop(key, None)
    return nb


def main(paths: list[str]) -> int:
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        before = nbformat.writes(nb)
        after = nbformat.writes(strip(nb))
        if after != before:
            with open(path, "w", encoding="utf-8") as f:
                f.write(after)
            print(f"stripped {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
