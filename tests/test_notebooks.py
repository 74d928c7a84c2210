"""The notebook suite: hygiene, layout, exercises with their solutions, nbval at tiny parameters with checks that
fail, a notebook alone in an empty folder (as in Colab), parameter checks (declared once in
maelib.course.parameters, refused by the suite before a notebook runs), a papermill sweep."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill as pm
import pytest

from maelib.course.exercises import exercise_tags, load_solutions, solutions_path, with_solutions

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
SANITIZE = NOTEBOOK_DIR / "nbval_sanitize.cfg"
CHECK = "NBVAL_CHECK_OUTPUT"
REPO = "maelib/maelib"


def setup_cell_of(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    return next(c for c in nb.cells if "setup" in c.metadata.get("tags", []))


def read(nb: Path) -> nbformat.NotebookNode:
    return nbformat.read(nb, as_version=4)


def test_the_suite_is_there():
    assert [nb.stem[:2] for nb in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06", "07", "08", "09"]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_are_stripped(nb):
    """Only cells marked NBVAL_CHECK_OUTPUT keep (text) outputs: the values nbval compares against."""
    for i, cell in enumerate(read(nb).cells):
        if cell.cell_type != "code":
            continue
        assert cell.execution_count is None, f"cell {i} has an execution count: run `make strip`"
        if CHECK in cell.source:
            assert cell.outputs, f"cell {i} of {nb.name} is marked {CHECK} but has no stored reference to compare with"
            assert all(o.output_type in ("stream", "execute_result") for o in cell.outputs), f"cell {i}"
            assert all(set(o.get("data", {})) <= {"text/plain"} for o in cell.outputs), f"cell {i} keeps rich output"
        else:
            assert not cell.outputs, f"cell {i} of {nb.name} has outputs: run `make strip`"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_layout(nb):
    """An opening of what it teaches with its Colab and Binder badges, the setup cell, a `parameters` cell, a cell
    of imports only, then `start_notebook` (which checks the parameters) as the first line of the next cell, the
    paper linked, exercises, a summary and further reading, tiny test parameters that exist in the notebook."""
    notebook = read(nb)
    cells = notebook.cells
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith("# ")
    assert f"colab.research.google.com/github/{REPO}/blob/main/notebooks/{nb.name}" in cells[0].source
    assert f"mybinder.org/v2/gh/{REPO}/main?urlpath=lab/tree/notebooks/{nb.name}" in cells[0].source
    code = [c for c in cells if c.cell_type == "code"]
    assert "setup" in code[0].metadata.get("tags", []), "the first code cell must be the setup cell"
    assert "parameters" in code[1].metadata.get("tags", []), "the second code cell must be tagged `parameters`"
    imports = [line for line in code[2].source.splitlines() if line.strip() and not line.startswith((" ", ")"))]
    assert all(line.startswith(("import ", "from ", "%")) for line in imports), "the cell after the parameters: imports only"
    assert code[3].source.startswith(f'out = start_notebook("{nb.stem}", globals())'), \
        "the cell after the imports must start with start_notebook, which checks the parameters"
    assert "check_parameter(" not in "\n".join(c.source for c in code), "parameters are declared in maelib.course.parameters"
    declared = pm.inspect_notebook(str(nb))
    assert "out_dir" in declared
    tiny = notebook.metadata["maelib"]["test_parameters"]
    assert set(tiny) <= set(declared), f"unknown test parameters {set(tiny) - set(declared)}"
    text = "\n".join(c.source for c in cells)
    assert "check(" in text and "GPU" in text and "arxiv.org/abs/2111.06377" in text
    headings = [line for c in cells if c.cell_type == "markdown" for line in c.source.splitlines() if line.startswith("## ")]
    for heading in ("## Exercises", "## Summary", "## Further reading"):
        assert heading in headings, f"{nb.name} has no {heading!r} section"


def test_every_notebook_has_the_same_setup_cell():
    """The Colab install cell cannot import maelib (that is what it installs), so it is repeated: keep it one text."""
    sources = {nb.name: setup_cell_of(read(nb)).source for nb in NOTEBOOKS}
    assert len(set(sources.values())) == 1, sources
    assert f"git+https://github.com/{REPO}" in next(iter(sources.values()))


def test_the_setup_cell_installs_a_package_pip_accepts(tmp_path):
    """The requirement that the setup cell installs, pointed at this checkout instead of GitHub: pip resolves it
    and the extra exists (no network: --no-deps, --no-build-isolation)."""
    source = setup_cell_of(read(NOTEBOOKS[0])).source
    requirement = re.search(r'"(maelib\[[\w,]+\] @ git\+https://github\.com/[\w/]+)"', source).group(1)
    local = requirement.replace(f"git+https://github.com/{REPO}", ROOT.as_uri())
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-build-isolation",
                             "--no-index", local], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "does not provide the extra" not in result.stdout + result.stderr, result.stdout + result.stderr


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_exercises_have_solutions_kept_off_the_page(nb):
    """Every exercise is an unanswered cell tagged exercise-N, followed by its check; its solution lives only in
    notebooks/solutions/<notebook>.py, and every solution belongs to an exercise."""
    notebook = read(nb)
    tags = exercise_tags(notebook)
    assert len(tags) >= 2, f"{nb.name} has {len(tags)} tagged exercises"
    assert tags == [f"exercise-{i}" for i in range(1, len(tags) + 1)], tags
    solutions = load_solutions(nb)
    with_solutions(nb)  # raises when exercises and solutions do not match one to one
    cells = notebook.cells
    page = "\n".join(c.source for c in cells)
    for i, cell in enumerate(cells):
        tag = next((t for t in cell.metadata.get("tags", []) if t.startswith("exercise-")), None)
        if tag is None:
            continue
        assert "None" in cell.source, f"{tag} of {nb.name} is not left for the learner to fill in"
        following = []  # the code cells after the answer, up to the next text cell
        for later in cells[i + 1:]:
            if later.cell_type != "code":
                break
            following.append(later.source)
        assert any("check(" in f for f in following), f"no cell after {tag} of {nb.name} checks the answer"
        for line in solutions[tag].splitlines():
            line = line.strip()
            if "=" in line and not line.startswith("#") and len(line) > 25:
                assert line not in page, f"the solution line {line!r} of {tag} is on the page of {nb.name}"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_passes_nbval_at_tiny_parameters(nb, tmp_path):
    """papermill injects the notebook's tiny parameters; nbval (lax) runs every cell and compares the
    NBVAL_CHECK_OUTPUT cells with their stored outputs."""
    tiny = read(nb).metadata["maelib"]["test_parameters"]
    solved, prepared = tmp_path / f"solved_{nb.name}", tmp_path / nb.name
    nbformat.write(with_solutions(nb), solved)  # every exercise answered with its solution
    pm.execute_notebook(str(solved), str(prepared), parameters={**tiny, "out_dir": str(tmp_path / "out")},
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
        env={**os.environ, "MAELIB_CHECKS": "solutions"},  # a failed or unanswered check fails the run
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_a_notebook_alone_in_an_empty_folder_runs_as_in_colab(executed_notebooks):
    """Colab opens a notebook by itself, in an empty working directory: its setup cell (a no-op where maelib is
    installed) and its defaults must work there, and the outputs land in ./runs (the run: conftest.py)."""
    alone = executed_notebooks["02_alone"].parent
    results = json.loads((alone / "runs" / "notebooks" / "02_building_the_mae" / "results.json").read_text())
    assert results["my_loss"] == pytest.approx(results["maelib_loss"], abs=1e-4)


def test_a_wrong_check_fails_a_strict_run_and_only_prints_otherwise(tmp_path, monkeypatch, capsys):
    from maelib.course.notebook import CheckFailed, check

    monkeypatch.delenv("MAELIB_CHECKS", raising=False)
    assert check(2, 3, "two is three") is False and check(None, 3, "later") is False
    assert "✗ two is three" in capsys.readouterr().out
    monkeypatch.setenv("MAELIB_CHECKS", "strict")
    with pytest.raises(CheckFailed, match="two is three"):
        check(2, 3, "two is three")
    assert check(None, 3, "later") is False  # unanswered exercises do not fail a strict run
    assert check(3, 3, "three") is True
    monkeypatch.setenv("MAELIB_CHECKS", "solutions")
    with pytest.raises(CheckFailed, match="not answered"):
        check(None, 3, "later")
    monkeypatch.setenv("MAELIB_CHECKS", "loud")
    with pytest.raises(ValueError, match="MAELIB_CHECKS"):
        check(3, 3)


def test_a_broken_parameter_fails_in_the_first_cell_with_a_clear_message(tmp_path):
    nb = NOTEBOOK_DIR / "01_patches_and_masking.ipynb"
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(str(nb), str(tmp_path / "bad.ipynb"), cwd=str(NOTEBOOK_DIR), progress_bar=False,
                            parameters={"mask_ratio": 1.5, "out_dir": str(tmp_path / "out")})
    assert "start_notebook(" in err.value.source  # the notebook's start, right after its imports, before any work
    assert err.value.ename == "ValueError" and "mask_ratio" in err.value.evalue and "1.5" in err.value.evalue
    assert "[0.0, 1.0)" in err.value.evalue  # the allowed range
    executed = read(tmp_path / "bad.ipynb")
    code = [c for c in executed.cells if c.cell_type == "code"]
    assert "setup" in code[0].metadata.get("tags", []) and "parameters" in code[1].metadata.get("tags", [])
    assert "injected-parameters" in code[2].metadata.get("tags", [])
    assert code[4].source == err.value.source  # after the imports (code[3])


CHILD = NOTEBOOK_DIR / "sweeps" / "ablation_run.ipynb"


@pytest.mark.parametrize("nb", NOTEBOOKS + [CHILD], ids=lambda p: p.stem)
def test_declared_parameters_are_the_notebooks_parameters_cell(nb):
    """maelib.course.parameters declares each notebook's parameters once: exactly the names of its `parameters`
    cell, in that order; its default values and its tiny test parameters pass the declarations."""
    from maelib.course.parameters import NOTEBOOK_PARAMETERS, check_parameters
    from maelib.course.suite import defaults_of

    assert list(pm.inspect_notebook(str(nb))) == list(NOTEBOOK_PARAMETERS[nb.stem])
    defaults = defaults_of(nb)
    check_parameters(nb.stem, defaults)
    check_parameters(nb.stem, {**defaults, **read(nb).metadata["maelib"]["test_parameters"]})


def test_the_suite_refuses_a_bad_parameter_before_running_a_notebook(tmp_path):
    """`-p mask_ratio 1.5` stops `python -m maelib.course.suite` with maelib's message (the notebook, the
    parameter, its range) before anything runs: no kernel, no output folder, no traceback."""
    out = tmp_path / "suite"
    result = subprocess.run([sys.executable, "-m", "maelib.course.suite", "--only", "01", "-p", "mask_ratio", "1.5",
                             "--out", str(out)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode != 0
    assert "01_patches_and_masking.ipynb: parameter mask_ratio must be in [0.0, 1.0), got 1.5" in result.stderr
    assert "Traceback" not in result.stderr and "===" not in result.stdout and not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--only", "05", "-p", "train_images", "600", "-p", "k", "700"],
     r"05_probing_and_knn.ipynb: parameter k must be in \[1, 600\] \(at most train_images"),
    (["--only", "06", "-p", "partial_blocks", "[0, -1]"], r"06_finetuning.ipynb: parameter partial_blocks\[1\] must be >= 0"),
    (["--only", "04", "05", "-p", "05:test_images", "'2000'"], r"05_probing_and_knn.ipynb: parameter test_images must be int or None"),
    (["--only", "08", "-p", "factors", "['mask_ratio', 'colour']"], r"08_ablations.ipynb: parameter factors\[1\] must be one of"),
], ids=["cross-parameter", "list item", "type", "choices"])
def test_the_suite_refuses_a_bad_parameter_of_any_kind(args, message, tmp_path):
    from maelib.course.suite import main

    with pytest.raises(SystemExit, match=message):
        main([*args, "--out", str(tmp_path / "suite")])
    assert not (tmp_path / "suite").exists()


def test_start_notebook_checks_parameters_seeds_and_makes_the_folder(tmp_path, capsys):
    import torch

    from maelib.course.notebook import start_notebook

    values = {"checkpoint": "", "arch": "mae_vit_mini_patch4_28", "epochs": 1, "train_images": 64, "test_images": 32,
              "batch_size": 16, "base_lr": 2e-3, "layer_decay": 0.75, "drop_path": 0.1, "partial_blocks": "[0, 1]",
              "partial_epochs": 1, "probe_all_images": 100, "fallback_epochs": 1, "out_dir": str(tmp_path / "out"), "seed": 3}
    namespace = dict(values)
    out = start_notebook("06_finetuning", namespace)
    assert out == tmp_path / "out" and out.is_dir() and "device:" in capsys.readouterr().out
    assert namespace["partial_blocks"] == [0, 1]  # given as text (papermill -p), parsed and written back
    first = torch.rand(1)
    start_notebook("06_finetuning", dict(values))
    assert torch.equal(torch.rand(1), first)  # seeded
    with pytest.raises(ValueError, match=r"parameter batch_size must be in \[1, 64\] \(at most train_images"):
        start_notebook("06_finetuning", {**values, "batch_size": 128})
    with pytest.raises(TypeError, match="parameter epochs must be int, got True"):
        start_notebook("06_finetuning", {**values, "epochs": True})


def test_papermill_sweep_records_the_numbers(executed_notebooks):
    """A two-value sweep of notebook 1's mask ratio (run in conftest.py): each run records how many patches stay
    visible."""
    recorded = {r: json.loads((executed_notebooks[f"01@{r}"].parent / "results.json").read_text()) for r in (0.5, 0.9)}
    assert recorded[0.5]["visible_patches"] == 24  # int(49 * 0.5)
    assert recorded[0.9]["visible_patches"] == 4  # int(49 * 0.1)
    assert recorded[0.5]["num_patches"] == recorded[0.9]["num_patches"] == 49
    assert recorded[0.5]["mask_ratio"] == 0.5 and recorded[0.9]["mask_ratio"] == 0.9  # the injected parameters


def test_runs_dir_and_output_dir(tmp_path, monkeypatch):
    from maelib.course.notebook import output_dir, runs_dir

    monkeypatch.delenv("MAELIB_RUNS", raising=False)
    monkeypatch.chdir(NOTEBOOK_DIR)
    assert runs_dir() == ROOT / "runs"  # the notebooks folder of a clone
    monkeypatch.chdir(tmp_path)
    assert runs_dir() == tmp_path / "runs"  # a notebook alone
    monkeypatch.setenv("MAELIB_RUNS", str(tmp_path / "elsewhere"))
    assert runs_dir() == tmp_path / "elsewhere"
    made = output_dir("", "02_building_the_mae")
    assert made == str(tmp_path / "elsewhere" / "notebooks" / "02_building_the_mae") and Path(made).is_dir()
    assert output_dir(str(tmp_path / "given"), "x") == str(tmp_path / "given")


def test_solutions_and_exercises_must_match(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("a = None", metadata={"tags": ["exercise-1"]}),
                nbformat.v4.new_code_cell("check(a, 1)")]
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(FileNotFoundError, match="solutions"):
        load_solutions(path)
    (tmp_path / "solutions").mkdir()
    solutions_path(path).write_text("# %% exercise-1\na = 1\n\n# %% exercise-2\nb = 2\n")
    with pytest.raises(ValueError, match="exercise-2"):
        with_solutions(path)
    solutions_path(path).write_text("# intro\n\n# %% exercise-1\na = 1\n")
    assert with_solutions(path).cells[0].source == "a = 1"


def test_the_ablation_child_notebook_runs_one_setting_through_the_sweep(tmp_path):
    """Notebook 8's papermill child, run by maelib.experiments.sweep as one setting at its tiny parameters."""
    from maelib.experiments.sweep import Setting, run_sweep

    child = NOTEBOOK_DIR / "sweeps" / "ablation_run.ipynb"
    tiny = read(child).metadata["maelib"]["test_parameters"]
    settings = [Setting("mask_ratio", 0.5, 0, dict(tiny, mask_ratio=0.5, seed=0))]
    result = run_sweep(settings, tmp_path, executor="inline", notebook=str(child), progress=None)
    assert not result.failed, result.failed
    row = result.rows[0]
    assert row["mask_ratio"] == 0.5 and row["encoder_tokens"] == 1 + 24 and row["steps"] == tiny["steps"]
    assert (tmp_path / "mask_ratio=0.5" / "seed0" / "ablation_run.ipynb").exists()


def test_notebook_8_reads_the_committed_study_at_its_defaults(tmp_path, monkeypatch):
    """At its defaults notebook 8 draws the committed CPU study in seconds, exercises answered (strict checks), and
    records as lessons exactly the study's resolved directions (and the baseline's bars), each as it came out."""
    study = json.loads((ROOT / "benchmarks/results/ablation_study_cpu.json").read_text())
    nb = NOTEBOOK_DIR / "08_ablations.ipynb"
    solved = tmp_path / nb.name
    nbformat.write(with_solutions(nb), solved)
    monkeypatch.setenv("MAELIB_CHECKS", "solutions")
    pm.execute_notebook(str(solved), str(tmp_path / "executed.ipynb"), parameters={"out_dir": str(tmp_path / "out")},
                        cwd=str(NOTEBOOK_DIR), kernel_name="python3", progress_bar=False)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["runs"] == len(study["rows"]) and results["study"].endswith("ablation_study_cpu.json")
    names = {"knn_acc_mean": "k-NN", "probe_acc_mean": "probe", "finetune_acc": "fine-tune"}
    resolved = [c for c in study["claims"] if c["metric"] in names and c["verdict"] != "not resolved"]
    bars_lesson = [k for k in results["lessons"] if k.startswith("the baseline clears both bars")]
    assert len(results["lessons"]) == len(resolved) + len(bars_lesson)
    assert all(results["lessons"][f"{names[c['metric']]}: {c['text']}"] for c in resolved if c["verdict"] == "holds")
