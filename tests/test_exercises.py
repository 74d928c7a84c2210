"""The exercises as a course: every notebook has a predict-then-run exercise, and every "Think" question has a model
answer in the instructor's guide.

Conventions (docs/instructor_guide.md says the same for authors):

- a **predict-then-run** exercise is a cell tagged `exercise-N` *and* `predict`: the learner writes a prediction
  (`prediction = None  # ...`); the code cells after it run an experiment with maelib and `check` the prediction
  against what the run measured, so the answer is on no page and depends on running;
- a **Think** question (no check; discussed) is a bold marker with an id, `**N. Think (NN-K).**`, NN the notebook's
  number and K counting from 1 in the notebook; docs/instructor_guide.md answers it under a heading
  `### Think NN-K`.
"""

import re
from pathlib import Path

import nbformat
import pytest

from maelib.course.exercises import TAG

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
GUIDE = ROOT / "docs" / "instructor_guide.md"
PREDICT = "predict"
# a bold "Think" marker, numbered or not ("**4. Think.**", "**Think**", "**5. Think (05-1)**") and the id in it
THINK = re.compile(r"\*\*(?:\d+\.\s*)?Think\b([^*]*)\*\*")
THINK_ID = re.compile(r"\((\d\d-\d+)\)")
GUIDE_HEADING = re.compile(r"^#{2,4} Think (\d\d-\d+)\b.*$", re.MULTILINE)


def read(nb: Path) -> nbformat.NotebookNode:
    return nbformat.read(nb, as_version=4)


def think_markers(nb: Path) -> list[tuple[str, str | None]]:
    """(the marker's text, its id or None) for every bold Think marker in the notebook's text cells, in order."""
    found = []
    for cell in read(nb).cells:
        if cell.cell_type != "markdown":
            continue
        for m in THINK.finditer(cell.source):
            ident = THINK_ID.search(m.group(1))
            found.append((m.group(0), ident.group(1) if ident else None))
    return found


def guide_answers() -> dict[str, str]:
    """{"NN-K": the answer's text} from the guide's `### Think NN-K` headings (text up to the next heading)."""
    text = GUIDE.read_text()
    heads = list(GUIDE_HEADING.finditer(text))
    answers = {}
    for h, nxt in zip(heads, heads[1:] + [None]):
        body = text[h.end(): nxt.start() if nxt else len(text)]
        body = re.split(r"^#{1,4} ", body, maxsplit=1, flags=re.MULTILINE)[0]
        answers[h.group(1)] = body.strip()
    return answers


def test_the_suite_is_there():
    assert [nb.stem[:2] for nb in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06", "07", "08", "09"]
    assert GUIDE.exists(), "docs/instructor_guide.md is missing"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_think_question_has_an_id_of_its_notebook(nb):
    markers = think_markers(nb)
    number = nb.stem[:2]
    ids = [ident for _, ident in markers]
    for marker, ident in markers:
        assert ident is not None, f"{nb.name}: the Think question {marker!r} has no id: write it as **N. Think ({number}-K).**"
        assert ident.startswith(f"{number}-"), f"{nb.name}: {marker!r} has the id of another notebook"
    assert ids == [f"{number}-{k}" for k in range(1, len(ids) + 1)], f"{nb.name}: Think ids {ids}: number them 1, 2, ..."


def test_every_think_question_has_a_model_answer_in_the_guide():
    answers = guide_answers()
    asked = {ident: (nb.name, marker) for nb in NOTEBOOKS for marker, ident in think_markers(nb) if ident}
    assert asked, "no Think question found in the notebooks"
    missing = sorted(set(asked) - set(answers))
    assert not missing, f"Think questions without a `### Think NN-K` answer in {GUIDE.name}: " + \
        ", ".join(f"{i} ({asked[i][0]})" for i in missing)
    stale = sorted(set(answers) - set(asked))
    assert not stale, f"{GUIDE.name} answers Think questions that no notebook asks: {stale}"
    for ident, body in answers.items():
        assert len(body.split()) >= 40, f"the answer to Think {ident} in {GUIDE.name} is too short to be a model answer"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_has_a_predict_then_run_exercise(nb):
    """At least one cell tagged exercise-N and `predict`, left for the learner, whose following code cells run an
    experiment (more than a one-line check) and check the prediction against it."""
    cells = read(nb).cells
    predicts = [i for i, c in enumerate(cells) if c.cell_type == "code" and PREDICT in c.metadata.get("tags", [])]
    assert predicts, f"{nb.name} has no predict-then-run exercise (a cell tagged exercise-N and {PREDICT!r})"
    for i in predicts:
        tags = cells[i].metadata["tags"]
        assert any(TAG.match(t) for t in tags), f"{nb.name}: a {PREDICT!r} cell must also be an exercise-N, tags {tags}"
        assert "None" in cells[i].source, f"{nb.name}: the prediction of {tags} is not left for the learner"
        following = []
        for later in cells[i + 1:]:
            if later.cell_type != "code":
                break
            following.append(later.source)
        run = "\n".join(following)
        assert "check(" in run, f"{nb.name}: no check after the prediction {tags}"
        statements = [line for line in run.splitlines() if line.strip() and not line.strip().startswith("#")]
        assert len(statements) >= 3, f"{nb.name}: the cells after {tags} only check; they must run the experiment"


def test_the_guide_covers_every_notebook_and_is_on_the_site():
    text = GUIDE.read_text()
    for nb in NOTEBOOKS:
        assert re.search(rf"^## {int(nb.stem[:2])}\. ", text, re.MULTILINE), f"{GUIDE.name} has no section for {nb.name}"
    site = (ROOT / "scripts" / "build_site.py").read_text()
    assert "instructor_guide" in site, "scripts/build_site.py does not put the guide on the course site"
