"""Shared pytest setup: only what every test run needs.

Markers `slow` and `gpu` are registered in pyproject.toml; here tests marked `gpu`
are skipped when no CUDA device is available.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    import torch  # only imported when a gpu test was collected

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def executed_notebooks(tmp_path_factory) -> dict[str, object]:
    """Notebooks executed once per test run by papermill, for every test that reads executed outputs:

    - "01@0.5", "01@0.9": notebook 1 at mask_ratio 0.5 and 0.9 (a two-value papermill sweep), each in its own
      out_dir with its results.json next to the executed copy;
    - "02_alone": notebook 2 copied alone into an empty folder and run with its defaults and strict checks, as
      Colab opens it (outputs land in ./runs there).

    Each value is the executed notebook's path. tests/test_notebooks.py checks their numbers, tests/test_site.py
    builds the course website from them.
    """
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import papermill as pm

    notebooks = Path(__file__).resolve().parent.parent / "notebooks"
    base = tmp_path_factory.mktemp("executed")
    runs = {}
    nb = notebooks / "01_patches_and_masking.ipynb"
    for ratio in (0.5, 0.9):
        out = base / f"ratio_{ratio}"
        out.mkdir()
        pm.execute_notebook(str(nb), str(out / nb.name), cwd=str(notebooks), progress_bar=False,
                            parameters={"mask_ratio": ratio, "out_dir": str(out)})
        runs[f"01@{ratio}"] = out / nb.name
    nb = notebooks / "02_building_the_mae.ipynb"
    alone = base / "content"
    alone.mkdir()
    shutil.copy(nb, alone / nb.name)
    env = {k: v for k, v in os.environ.items() if k != "MAELIB_RUNS"}
    env["MAELIB_CHECKS"] = "strict"
    subprocess.run([sys.executable, "-m", "papermill", nb.name, "executed.ipynb", "--no-progress-bar"],
                   cwd=alone, env=env, check=True, capture_output=True, timeout=600)
    runs["02_alone"] = alone / "executed.ipynb"
    return runs
