"""The YAML presets and the notebooks, where they are: inside an installed wheel (`maelib/_bundled/`, copied
there at build time by setup.py) or, in a clone of the repository, its `configs/` and `notebooks/` folders.

    maelib presets                                   # every preset, with what it is
    maelib pretrain --config fmnist                  # = configs/pretrain_fmnist.yaml; a path works too
    maelib notebooks ~/mae-course                    # the notebooks, for a student without a clone
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent  # the maelib package (this file is maelib/course/presets.py)
BUNDLED = PACKAGE / "_bundled"  # what setup.py's build step copies into a wheel
NOTEBOOK_FILES = ("*.ipynb", "nbval_sanitize.cfg", "solutions/*.py", "sweeps/*.ipynb")
BUNDLED_FILES = {"configs": ("*.yaml",), "notebooks": NOTEBOOK_FILES}  # what a wheel carries (setup.py reads this)


def resource_dir(name: str) -> Path:
    """`configs` or `notebooks`: the installed copy, else the clone's folder."""
    for where in (BUNDLED / name, PACKAGE.parent / name):
        if where.is_dir():
            return where
    raise FileNotFoundError(f"maelib's {name} are not installed with this copy of maelib ({PACKAGE}): reinstall it "
                            "from a wheel or a clone of the repository (pip install maelib)")


def list_presets() -> dict[str, Path]:
    """Preset name (the file name without .yaml, e.g. "pretrain_fmnist") -> its file."""
    return {p.stem: p for pattern in BUNDLED_FILES["configs"] for p in sorted(resource_dir("configs").glob(pattern))}


def describe(path: Path) -> str:
    """What a preset is: the first sentence of its header comment."""
    words = []
    for line in path.read_text().splitlines():
        if not line.startswith("#") or line.startswith("#  "):  # the header ends, or its example commands start
            break
        words.append(line.lstrip("# ").strip())
    text = re.split(r"(?<! al)\. ", " ".join(words))[0].rstrip(".")  # "He et al. 2021" is not a sentence end
    return text if len(text) <= 110 else text[:109].rstrip() + "…"


def preset_path(command: str, name: str) -> Path | None:
    """The preset `name` for `command`: "pretrain_fmnist" or, for `maelib pretrain`, just "fmnist"; None if
    there is no such preset."""
    presets = list_presets()
    return presets.get(name) or presets.get(f"{command}_{name}")


def resolve_config_args(command: str, args: list[str]) -> list[str]:
    """Replace `--config NAME` (or `--config=NAME`) by the preset's path when NAME is not a file but a preset.
    A name that is neither is refused, with the presets of this command."""
    out = list(args)
    for i, arg in enumerate(out):
        if arg == "--config" and i + 1 < len(out):
            j, value = i + 1, out[i + 1]
        elif arg.startswith("--config="):
            j, value = i, arg.split("=", 1)[1]
        else:
            continue
        if Path(value).expanduser().exists() or value.lstrip().startswith("{"):  # a file, or inline YAML
            continue
        found = preset_path(command, value)
        if found is None:
            mine = sorted(n.removeprefix(f"{command}_") for n in list_presets() if n.startswith(f"{command}_"))
            raise FileNotFoundError(f"--config {value}: no such file, and no preset of that name. The presets of "
                                    f"maelib {command}: {', '.join(mine) or 'none'} (maelib presets lists them all)")
        out[j] = str(found) if j == i + 1 else f"--config={found}"
    return out


def copy_notebooks(dest: str | Path) -> list[Path]:
    """Copy the notebooks (with their solutions and the ablation child notebook) into `dest`, which must not
    hold notebooks of the same names already (nothing is overwritten). Returns the files written."""
    src, dest = resource_dir("notebooks"), Path(dest).expanduser()
    files = [p for pattern in NOTEBOOK_FILES for p in sorted(src.glob(pattern))]
    clashes = [str(dest / p.relative_to(src)) for p in files if (dest / p.relative_to(src)).exists()]
    if clashes:
        raise FileExistsError(f"{dest} already holds {len(clashes)} of the notebook files (e.g. {clashes[0]}): "
                              "nothing was copied. Give another folder, or move those files away first")
    written = []
    for p in files:
        target = dest / p.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, target)
        written.append(target)
    return written


# ------------------------------------------------------------------ the `maelib presets` and `maelib notebooks` commands
def presets_command(args: list[str]) -> dict:
    """`maelib presets`: every preset, with the command that runs it and what it is."""
    import argparse

    argparse.ArgumentParser(prog="maelib presets", description=presets_command.__doc__).parse_args(args)
    presets = list_presets()
    width = max(map(len, presets), default=0)
    for name, path in presets.items():
        command, _, short = name.partition("_")
        print(f"maelib {command} --config {short:<{width - len(command) - 1}}  {describe(path)}")
    return {name: str(path) for name, path in presets.items()}


def notebooks_command(args: list[str]) -> dict:
    """`maelib notebooks DIR`: copy the course's notebooks into DIR (made if missing; nothing is overwritten)."""
    import argparse

    parser = argparse.ArgumentParser(prog="maelib notebooks", description=notebooks_command.__doc__)
    parser.add_argument("dir", help="where the notebooks go, e.g. ~/mae-course")
    written = copy_notebooks(parser.parse_args(args).dir)
    print(f"{len(written)} files copied into {Path(args[-1]).expanduser()}; open them with jupyter lab")
    return {"files": [str(p) for p in written]}
