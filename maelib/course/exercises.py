"""The notebooks' exercises and their solutions, kept apart so that no answer shows on the page.

Each exercise has a cell for the learner's answer, tagged `exercise-N`, followed by a cell that checks it with
`maelib.course.notebook.check` against a value that maelib computes. The solutions live in one file per notebook,
`notebooks/solutions/<notebook>.py`, one `# %% exercise-N` section per tagged cell:

    solutions = load_solutions("notebooks/02_building_the_mae.ipynb")   # {"exercise-1": "decoder_tokens = ..."}
    nb = with_solutions("notebooks/02_building_the_mae.ipynb")          # the notebook, answered

The tests run every notebook answered this way with MAELIB_CHECKS=solutions, so every exercise must pass.
A learner who is stuck can print one: `print(load_solutions("02_building_the_mae.ipynb")["exercise-1"])`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

TAG = re.compile(r"^exercise-\d+$")
_SECTION = re.compile(r"^# %% (exercise-\d+)\s*$", re.MULTILINE)


def solutions_path(notebook: str | os.PathLike) -> Path:
    """notebooks/NAME.ipynb -> notebooks/solutions/NAME.py"""
    notebook = Path(notebook)
    return notebook.parent / "solutions" / f"{notebook.stem}.py"


def exercise_tags(nb) -> list[str]:
    """The exercise-N tags of a notebook's cells (an nbformat NotebookNode), in order."""
    return [t for cell in nb.cells for t in cell.get("metadata", {}).get("tags", []) if TAG.match(t)]


def load_solutions(notebook: str | os.PathLike) -> dict[str, str]:
    """{"exercise-N": source} from the notebook's solutions file. Raises FileNotFoundError naming the file."""
    path = solutions_path(notebook)
    if not path.exists():
        raise FileNotFoundError(f"no solutions file {path} for {Path(notebook).name}")
    parts = _SECTION.split(path.read_text())
    return {tag: body.strip() for tag, body in zip(parts[1::2], parts[2::2])}


def with_solutions(notebook: str | os.PathLike):
    """The notebook (nbformat, version 4) with each exercise cell replaced by its solution.

    Raises ValueError when an exercise has no solution or a solution no exercise, so the two cannot drift apart.
    """
    import nbformat

    nb = nbformat.read(os.fspath(notebook), as_version=4)
    tags, solutions = exercise_tags(nb), load_solutions(notebook)
    missing, unused = sorted(set(tags) - set(solutions)), sorted(set(solutions) - set(tags))
    if missing or unused or len(tags) != len(set(tags)):
        raise ValueError(f"{Path(notebook).name}: exercises without a solution {missing}, solutions without an "
                         f"exercise {unused}, tags {tags} (each exercise-N once) in {solutions_path(notebook)}")
    for cell in nb.cells:
        for tag in cell.get("metadata", {}).get("tags", []):
            if TAG.match(tag):
                cell.source = solutions[tag]
    return nb
