"""The notebook suite: hygiene, nbval at tiny parameters, parameter checks, a papermill sweep."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill as pm
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
SANITIZE = NOTEBOOK_DIR / "nbval_sanitize.cfg"
CHECK = "NBVAL_CHECK_OUTPUT"


def read(nb: Path) -> nbformat.NotebookNode:
    return nbformat.read(nb, as_version=4)


def test_the_suite_is_there():
    assert [nb.stem[:2] for nb in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06", "07"]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_are_stripped(nb):
    """Only cells marked NBVAL_CHECK_OUTPUT keep (text) outputs: the values nbval compares against."""
    for i, cell in enumerate(read(nb).cells):
        if cell.cell_type != "code":
            continue
        assert cell.execution_count is None, f"cell {i} has an execution count: run `make strip`"
        if CHECK in cell.source:
            assert all(o.output_type in ("stream", "execute_result") for o in cell.outputs), f"cell {i}"
            assert all(set(o.get("data", {})) <= {"text/plain"} for o in cell.outputs), f"cell {i} keeps rich output"
        else:
            assert not cell.outputs, f"cell {i} of {nb.name} has outputs: run `make strip`"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_layout(nb):
    """A statement of what it teaches, a `parameters` cell whose values are checked in the next cell,
    exercises that check themselves, and tiny test parameters that exist in the notebook."""
    notebook = read(nb)
    cells = notebook.cells
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith("# ")
    code = [c for c in cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []), "the first code cell must be tagged `parameters`"
    assert "check_parameter(" in code[1].source, "the cell after the parameters must check them"
    declared = pm.inspect_notebook(str(nb))
    assert "out_dir" in declared
    tiny = notebook.metadata["maelib"]["test_parameters"]
    assert set(tiny) <= set(declared), f"unknown test parameters {set(tiny) - set(declared)}"
    text = "\n".join(c.source for c in cells)
    assert "check(" in text and "## Exercises" in text and "GPU" in text


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_passes_nbval_at_tiny_parameters(nb, tmp_path):
    """papermill injects the notebook's tiny parameters; nbval (lax) runs every cell and compares the
    NBVAL_CHECK_OUTPUT cells with their stored outputs."""
    tiny = read(nb).metadata["maelib"]["test_parameters"]
    prepared = tmp_path / nb.name
    pm.execute_notebook(str(nb), str(prepared), parameters={**tiny, "out_dir": str(tmp_path / "out")},
                        prepare_only=True, progress_bar=False)
    # nbval skips comparing cells without an execution count; stripped notebooks have none, so number the
    # cells whose stored output is the reference
    notebook = read(prepared)
    for i, cell in enumerate(notebook.cells):
        if cell.cell_type == "code" and CHECK in cell.source and cell.outputs:
            cell.execution_count = i
    nbformat.write(notebook, prepared)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
         "--nbval-sanitize-with", str(SANITIZE), "--nbval-cell-timeout", "600", str(prepared)],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_a_broken_parameter_fails_in_the_first_cell_with_a_clear_message(tmp_path):
    nb = NOTEBOOK_DIR / "01_patches_and_masking.ipynb"
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(str(nb), str(tmp_path / "bad.ipynb"), cwd=str(NOTEBOOK_DIR), progress_bar=False,
                            parameters={"mask_ratio": 1.5, "out_dir": str(tmp_path / "out")})
    assert "check_parameter(" in err.value.source  # the parameter-check cell, before any work
    assert err.value.ename == "ValueError" and "mask_ratio" in err.value.evalue and "1.5" in err.value.evalue
    executed = read(tmp_path / "bad.ipynb")
    code = [c for c in executed.cells if c.cell_type == "code"]
    assert "injected-parameters" in code[1].metadata.get("tags", [])
    assert code[2].source == err.value.source


def test_papermill_sweep_records_the_numbers(tmp_path):
    """A two-value sweep of notebook 1's mask ratio: each run records how many patches stay visible."""
    nb = NOTEBOOK_DIR / "01_patches_and_masking.ipynb"
    recorded = {}
    for ratio in (0.5, 0.9):
        out = tmp_path / f"ratio_{ratio}"
        out.mkdir()
        pm.execute_notebook(str(nb), str(out / "run.ipynb"), cwd=str(NOTEBOOK_DIR), progress_bar=False,
                            parameters={"mask_ratio": ratio, "out_dir": str(out)})
        recorded[ratio] = json.loads((out / "results.json").read_text())
    assert recorded[0.5]["visible_patches"] == 24  # int(49 * 0.5)
    assert recorded[0.9]["visible_patches"] == 4  # int(49 * 0.1)
    assert recorded[0.5]["num_patches"] == recorded[0.9]["num_patches"] == 49
