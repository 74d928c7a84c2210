"""Store the reference outputs that nbval compares: `python scripts/nbval_references.py notebooks/02_*.ipynb`.

Each notebook runs as the tests run it (its `test_parameters`, every exercise answered from
notebooks/solutions/, MAELIB_CHECKS=solutions); the text outputs of its `# NBVAL_CHECK_OUTPUT` cells are copied
into the notebook, everything else stays stripped. Run it after changing what such a cell prints, and read the
diff: the stored text is what every later run must reproduce.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import nbformat
import papermill as pm

from maelib.course.exercises import with_solutions

CHECK = "NBVAL_CHECK_OUTPUT"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from strip_notebooks import strip  # noqa: E402


def refresh(path: Path) -> int:
    source = nbformat.read(path, as_version=4)
    tiny = source.metadata["maelib"]["test_parameters"]
    os.environ["MAELIB_CHECKS"] = "solutions"
    with tempfile.TemporaryDirectory() as tmp:
        solved = Path(tmp) / path.name
        nbformat.write(with_solutions(path), solved)
        executed = pm.execute_notebook(str(solved), str(Path(tmp) / "executed.ipynb"), cwd=str(path.parent),
                                       parameters={**tiny, "out_dir": str(Path(tmp) / "out")}, progress_bar=False)
    by_id = {cell.get("id"): cell for cell in executed.cells}
    stored = 0
    for cell in source.cells:
        if cell.cell_type == "code" and CHECK in cell.source:
            cell.outputs = by_id[cell.id].outputs
            stored += 1
    nbformat.write(strip(source), path)
    return stored


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(f"{arg}: {refresh(Path(arg))} reference output(s) stored")
