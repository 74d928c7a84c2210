"""`make site`: the course website, built offline from the notebooks `make run` executed.

    make run && make site                  # executed notebooks from runs/suite/ -> runs/site/
    python -m http.server -d runs/site     # then open http://localhost:8000

Sphinx with myst-nb renders each executed notebook as it is (nothing is re-executed; docs/conf.py). This script
assembles the pages in runs/site_src/ first:

- the nine notebooks, in course order, each from runs/suite/<name>/<name>.ipynb; a notebook whose code has
  changed since it was executed gets a warning box, and with --allow-unexecuted a notebook that was never executed
  is shown without outputs under a notice (otherwise the build stops and says to run `make run`);
- at the end of each notebook, links to the API pages of every maelib function, class and module its code uses
  (found by reading the code with `ast`, resolved by importing maelib);
- one API page per maelib module, from the docstrings (autodoc), with the source beside it (viewcode);
- the README (results and gallery), the instructor's guide (docs/instructor_guide.md) and an index page with
  the course order and each notebook's Colab and Binder badges. Badge images are served from the site itself,
  so pages look whole offline; links to files of the repository that are not pages point to GitHub.

Interactive widgets need a kernel; their outputs are replaced by a note that says where to run them.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import inspect
import json
import pkgutil
import re
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
DOCS = ROOT / "docs"
REPO = "maelib/maelib"
GITHUB = f"https://github.com/{REPO}/blob/main/"
BADGES = {"https://colab.research.google.com/assets/colab-badge.svg": "colab-badge.svg",
          "https://mybinder.org/badge_logo.svg": "binder-badge.svg"}
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = ("<p class=\"maelib-widget-note\"><em>An interactive widget is here: it needs a running kernel. Open "
               "the notebook in JupyterLab, Colab or Binder (the badges at the top) to use it.</em></p>")
LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")


# ---------------------------------------------------------------------------------------------- the API
def api_modules() -> list[str]:
    """Every public module of maelib (no part of the name starting with an underscore), the package first."""
    import maelib

    names = ["maelib"] + [m.name for m in pkgutil.walk_packages(maelib.__path__, "maelib.")
                          if not any(part.startswith("_") for part in m.name.split("."))]
    return sorted(names, key=lambda n: (n != "maelib", n))


def resolve(dotted: str, modules: set[str]) -> tuple[str, str] | None:
    """("mod", module) or ("obj", module.qualname) where `dotted` is documented; None if it is not maelib's.
    A name that is neither a function nor a class (a constant, say) links to the module that holds it."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        holder = obj.__name__
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return None
            obj = getattr(obj, attr)
            if inspect.ismodule(obj):
                holder = obj.__name__
        if inspect.ismodule(obj):
            return ("mod", obj.__name__) if obj.__name__ in modules else None
        home = getattr(obj, "__module__", None)
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and home in modules:
            return "obj", f"{home}.{obj.__qualname__}"
        return ("mod", holder) if holder in modules else None
    return None


def maelib_names(code: str) -> set[str]:
    """The dotted maelib names a notebook's code uses: `from maelib.x import y`, `import maelib.x as A` with
    `A.f`, and `maelib.f(...)`."""
    source = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    aliases, found = {}, set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "maelib":
            for a in node.names:
                found.add(f"{node.module}.{a.name}")
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "maelib":
                    found.add(a.name)
                    aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else "maelib"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain, base = [], node
            while isinstance(base, ast.Attribute):
                chain.append(base.attr)
                base = base.value
            if isinstance(base, ast.Name) and base.id in aliases:
                found.add(".".join([aliases[base.id], *reversed(chain)]))
    return found


def api_cell(code: str, modules: set[str]) -> dict:
    """A markdown cell that links every maelib object the code uses to its API page, grouped by module."""
    by_module: dict[str, set[str]] = {}
    for name in maelib_names(code):
        hit = resolve(name, modules)
        if hit is None:
            continue
        kind, target = hit
        module = target if kind == "mod" else next(m for m in sorted(modules, key=len, reverse=True)
                                                   if target.startswith(m + "."))
        by_module.setdefault(module, set())
        if kind == "obj":
            by_module[module].add(target)
    lines = ["## maelib API used in this notebook", "",
             "Each name links to its documentation, written from the docstrings, with the source one click away.", ""]
    for module in sorted(by_module):
        members = ", ".join(f"{{py:obj}}`~{t}`" for t in sorted(by_module[module]))
        lines.append(f"- {{py:mod}}`{module}`" + (f": {members}" if members else ""))
    return markdown_cell("\n".join(lines) + "\n")


def package_names(modules: list[str]) -> str:
    """The top-level names (`maelib.__all__`), each linked to the page of the module that defines it."""
    import maelib

    links = []
    for name in maelib.__all__:
        hit = resolve(f"maelib.{name}", set(modules))
        links.append(f"{{py:obj}}`maelib.{name} <{hit[1]}>`" if hit and hit[0] == "obj" else f"`maelib.{name}`")
    return "\n## What `import maelib` gives\n\n" + ", ".join(links) + "\n"


def write_api_pages(src: Path, modules: list[str]) -> None:
    api = src / "api"
    api.mkdir(parents=True)
    for name in modules:  # each page documents what its module defines (re-exports link to it)
        (api / f"{name}.md").write_text(f"# {name}\n\n```{{eval-rst}}\n.. automodule:: {name}\n"
                                        "   :ignore-module-all:\n```\n" + (package_names(modules) if name == "maelib" else ""))
    toc = "\n".join(modules)
    (api / "index.md").write_text(
        "# API reference\n\nOne page per module of the package, from the docstrings (shapes and defaults "
        "included), each with its source.\n\n" f"```{{toctree}}\n:maxdepth: 1\n\n{toc}\n```\n")


# ---------------------------------------------------------------------------------------------- pages
def markdown_cell(text: str) -> dict:
    return {"cell_type": "markdown", "id": f"site-{zlib.crc32(text.encode()):08x}", "metadata": {}, "source": text}


def text_of(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def local_links(text: str, page: Path, src: Path, repo_dir: Path) -> str:
    """Badge images served by the site; relative links to files that are no page of the site -> GitHub."""
    for url, name in BADGES.items():
        text = text.replace(url, "/".join([".."] * len(page.parent.relative_to(src).parts) + ["_static", name]))

    def fix(m: re.Match) -> str:
        target = m.group(2)
        if re.match(r"^[a-z]+:|^#|^/", target) or "_static/" in target:
            return m.group(0)
        path = target.split("#")[0]
        if (page.parent / path).exists():
            return m.group(0)
        return m.group(1) + GITHUB + (repo_dir / path).resolve().relative_to(ROOT).as_posix() + m.group(3)

    return LINK.sub(fix, text)


def code_of(nb: dict) -> list[str]:
    return [text_of(c) for c in nb["cells"]
            if c["cell_type"] == "code" and "injected-parameters" not in c.get("metadata", {}).get("tags", [])]


def prepare_notebook(source: Path, executed: Path | None, page: Path, src: Path, modules: set[str]) -> str:
    """Write the page's notebook; returns its state: "executed", "stale" (code changed since) or "unexecuted"."""
    original = json.loads(source.read_text())
    nb = json.loads(executed.read_text()) if executed else original
    state = "unexecuted" if executed is None else ("executed" if code_of(nb) == code_of(original) else "stale")
    nb["metadata"].pop("widgets", None)  # widget state: myst-nb would load the widget manager from a CDN
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            cell["source"] = local_links(text_of(cell), page, src, NOTEBOOKS)
        for out in cell.get("outputs", []):
            if WIDGET_MIME in out.get("data", {}):
                out["data"] = {"text/html": WIDGET_NOTE}
    notice = {"unexecuted": "This page shows the notebook **without its outputs**: it has not been executed. "
                            "Run `make run`, then `make site`, for the pages with every figure.",
              "stale": "The outputs below come from an **older version** of this notebook (its code has changed "
                       "since `make run` executed it). Run `make run`, then `make site`, to refresh them."}
    if state in notice:
        nb["cells"].insert(1, markdown_cell(f":::{{warning}}\n{notice[state]}\n:::\n"))
    nb["cells"].append(api_cell("\n".join(code_of(original)), modules))
    page.write_text(json.dumps(nb, indent=1, ensure_ascii=False))
    return state


def summary_of(nb: dict) -> tuple[str, str]:
    """(title, what it teaches) of a notebook: the bold heads of its opening's list, else its first sentence."""
    first = text_of(nb["cells"][0])
    title = first.splitlines()[0].lstrip("# ").strip()
    heads = [h.strip().rstrip(".") for h in re.findall(r"^\s*(?:-|\d+\.)\s+\*\*([^*]+)\*\*", first, re.M)]
    if len(heads) >= 2:
        return title, " · ".join(heads)
    prose = " ".join(line for line in first.splitlines()[1:] if line.strip() and "badge" not in line)
    return title, re.split(r"(?<=\.)\s", prose.strip(), maxsplit=1)[0]


def write_index(src: Path, notebooks: list[Path], states: dict[str, str]) -> None:
    readme = (ROOT / "README.md").read_text()
    intro = readme.split("\n\n")[1].replace("\n", " ")
    rows = []
    for nb in notebooks:
        title, sentence = summary_of(json.loads(nb.read_text()))
        colab = f"https://colab.research.google.com/github/{REPO}/blob/main/notebooks/{nb.name}"
        binder = f"https://mybinder.org/v2/gh/{REPO}/main?urlpath=lab/tree/notebooks/{nb.name}"
        badges = (f"[![Open In Colab](_static/colab-badge.svg)]({colab}) "
                  f"[![Binder](_static/binder-badge.svg)]({binder})")
        shown = "" if states[nb.stem] == "executed" else f" ({states[nb.stem]})"
        rows.append(f"| [{title}](notebooks/{nb.stem}.ipynb){shown} | {sentence} | {badges} |")
    toc = "\n".join(f"notebooks/{nb.stem}" for nb in notebooks)
    (src / "index.md").write_text(
        "# maelib: a course on Masked Autoencoders\n\n" f"{intro}\n\n"
        "## The course, in order\n\nRead the pages first: each is a notebook as `make run` executed it, with its "
        "figures and numbers. Then run it yourself, on Colab or Binder (the badges), or in a clone with "
        "`make lab`.\n\n| notebook | what it teaches | run it |\n|---|---|---|\n" + "\n".join(rows) + "\n\n"
        "## Also here\n\n- [Results and gallery](readme.md): the README, with the measured numbers of the "
        "teaching recipe, the model zoo and the suite.\n- [Instructor's guide](instructor_guide.md): timings, "
        "what to run live, discussion points and a model answer to every Think question.\n- [API reference](api/index.md): every module of "
        "`maelib`, from its docstrings, with its source.\n\n"
        f"```{{toctree}}\n:hidden:\n:caption: The course\n\n{toc}\n```\n\n"
        "```{toctree}\n:hidden:\n:caption: Reference\n\nreadme\ninstructor_guide\napi/index\n```\n")


def assemble(src: Path, suite: Path, allow_unexecuted: bool) -> dict[str, str]:
    """Write every page into `src`; returns each notebook's state."""
    notebooks = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    missing = [nb.name for nb in notebooks if not (suite / nb.stem / nb.name).exists()]
    if missing and not allow_unexecuted:
        raise SystemExit(f"build_site: no executed copy in {suite} of {', '.join(missing)}. Run `make run` first "
                         "(it writes runs/suite/), or `make site SITE_ARGS=--allow-unexecuted` for pages without "
                         "outputs.")
    if src.exists():
        shutil.rmtree(src)
    (src / "notebooks").mkdir(parents=True)
    shutil.copytree(DOCS / "gallery", src / "docs" / "gallery")
    shutil.copytree(DOCS / "_static", src / "_static")  # the badges, referenced as images by the pages
    modules = api_modules()
    write_api_pages(src, modules)
    states = {}
    for nb in notebooks:
        executed = suite / nb.stem / nb.name
        states[nb.stem] = prepare_notebook(nb, executed if executed.exists() else None,
                                           src / "notebooks" / nb.name, src, set(modules))
    readme = src / "readme.md"
    readme.write_text(local_links((ROOT / "README.md").read_text(), readme, src, ROOT))
    guide = src / "instructor_guide.md"
    guide.write_text(local_links((DOCS / "instructor_guide.md").read_text(), guide, src, ROOT))
    write_index(src, notebooks, states)
    return states


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", type=Path, default=ROOT / "runs" / "suite", help="where `make run` wrote")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "site", help="the website (HTML)")
    parser.add_argument("--src", type=Path, default=None, help="the assembled pages (default: OUT next to it)")
    parser.add_argument("--allow-unexecuted", action="store_true",
                        help="show notebooks that `make run` has not executed, without outputs, under a notice")
    args = parser.parse_args(argv)
    absent = [m for m in ("sphinx", "myst_nb", "sphinx_book_theme") if importlib.util.find_spec(m) is None]
    if absent:
        raise SystemExit(f"build_site: {', '.join(absent)} not installed: `make install` brings them (maelib[test]), "
                         "or pip install -e \".[docs]\"")
    src = args.src or args.out.with_name(args.out.name + "_src")
    states = assemble(src, args.suite, args.allow_unexecuted)
    if args.out.exists():
        shutil.rmtree(args.out)
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-c", str(DOCS), str(src), str(args.out)]
    result = subprocess.run(cmd)
    if result.returncode:
        return result.returncode
    counts = {s: sum(v == s for v in states.values()) for s in ("executed", "stale", "unexecuted")}
    print(f"site: {args.out}/index.html ({', '.join(f'{n} {s}' for s, n in counts.items() if n)} notebooks); "
          f"serve it with: python -m http.server -d {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
