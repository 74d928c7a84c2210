"""Run the notebook suite headless with papermill: `make run` (or `python -m maelib.course.suite`).

    python -m maelib.course.suite                               # every notebook, default parameters, into runs/suite
    python -m maelib.course.suite -p epochs 3 -p 05:k 10        # a parameter for every notebook that has it / for one
    python -m maelib.course.suite --only 01 03 --out runs/try   # some notebooks

Every notebook's parameters are checked first against their declarations (maelib.course.parameters): a bad
`-p` stops the suite, naming the notebook, the parameter and its range, before anything runs. Then each notebook
runs in order into <out>/<notebook name>/ (the executed notebook, its figures and a results.json). Notebooks 5-7
start from the zoo's trained models by default (notebook 4 compares its own short run with them); `-p checkpoint
PATH` gives them another. At the end <out>/summary.json gathers every notebook's wall seconds and results, and
under "lessons" every lesson a notebook checked, with whether it held.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path

from .parameters import check_parameters
from .presets import resource_dir

NOTEBOOKS = resource_dir("notebooks")  # the wheel's copy when installed, else the clone's notebooks/


def parse_value(text: str):
    """'3' -> 3, '0.5' -> 0.5, 'True' -> True, "'x'" -> 'x'; anything else stays a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parameters_for(notebook: Path, overrides: list[tuple[str, str]], out_dir: Path) -> dict:
    """The parameters to inject: those of `overrides` the notebook declares, plus out_dir."""
    import papermill as pm

    declared = pm.inspect_notebook(str(notebook))
    params = {}
    for key, value in overrides:
        prefix, _, name = key.rpartition(":")
        if prefix and not notebook.stem.startswith(prefix):
            continue
        if name not in declared:
            if prefix:
                raise SystemExit(f"{notebook.name} has no parameter {name!r}; it has {sorted(declared)}")
            continue
        params[name] = parse_value(value)
    if "out_dir" in declared:
        params["out_dir"] = str(out_dir.resolve())  # notebooks run with notebooks/ as their working directory
    return params


def defaults_of(notebook: Path) -> dict:
    """The values of the notebook's `parameters` cell, {name: value}."""
    import papermill as pm

    return {name: parse_value(p["default"]) for name, p in pm.inspect_notebook(str(notebook)).items()}


def refuse_bad_parameters(notebook: Path, params: dict) -> None:
    """Exit with maelib's message (the notebook, the parameter, its allowed range) when `params` over the
    notebook's defaults break its declarations in maelib.course.parameters; nothing has run then."""
    try:
        check_parameters(notebook.stem, {**defaults_of(notebook), **params})
    except (TypeError, ValueError) as err:
        raise SystemExit(f"{notebook.name}: {err}; nothing was run") from None


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/suite"), help="where the results go")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a papermill parameter, NAME or NN:NAME for one notebook")
    parser.add_argument("--only", nargs="*", default=None, help="notebook number prefixes to run, e.g. 01 03")
    parser.add_argument("--kernel", default="python3")
    args = parser.parse_args(argv)
    import papermill as pm

    notebooks = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if args.only:
        notebooks = [nb for nb in notebooks if nb.stem[:2] in args.only]
    if not notebooks:
        raise SystemExit(f"no notebooks to run in {NOTEBOOKS}")
    planned = {nb: parameters_for(nb, args.parameter, args.out / nb.stem) for nb in notebooks}
    for nb, params in planned.items():  # every notebook's parameters, before any notebook runs
        refuse_bad_parameters(nb, params)
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"notebooks": {}, "lessons": {}}
    for nb, params in planned.items():
        out_dir = args.out / nb.stem
        out_dir.mkdir(parents=True, exist_ok=True)
        print(f"\n=== {nb.name} {json.dumps(params)}", flush=True)
        start = time.perf_counter()
        try:
            pm.execute_notebook(str(nb), str(out_dir / nb.name), parameters=params, kernel_name=args.kernel,
                                cwd=str(NOTEBOOKS), progress_bar=False, log_output=False)
        finally:
            seconds = round(time.perf_counter() - start, 1)
            results_file = out_dir / "results.json"
            results = json.loads(results_file.read_text()) if results_file.exists() else {}
            summary["notebooks"][nb.stem] = {"wall_seconds": seconds, **results}
            for lesson, holds in results.get("lessons", {}).items():
                summary["lessons"][f"{nb.stem}: {lesson}"] = holds
            summary["total_wall_seconds"] = round(sum(v["wall_seconds"] for v in summary["notebooks"].values()), 1)
            (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(f"    {seconds} s, results: {json.dumps(results)}", flush=True)
    failed = [lesson for lesson, holds in summary["lessons"].items() if not holds]
    print(f"\n{len(summary['lessons']) - len(failed)} of {len(summary['lessons'])} lessons hold"
          + "".join(f"\n  does not hold: {lesson}" for lesson in failed))
    print(f"\nsuite done in {summary['total_wall_seconds']} s: executed notebooks, figures and summary.json are in "
          f"{args.out.resolve()}")
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
