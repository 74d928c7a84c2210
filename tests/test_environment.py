"""The install files agree with each other.

pyproject.toml is the reference. environment.yml (conda users, GPU) and the binder/
files (mybinder.org, CPU) must list every runtime and `notebooks` dependency of it,
with version ranges that do not contradict it; .ci/run and the Makefile must keep
`make test` as the one way in, and the README must show `make run` and `make test`
before any other command.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
ENV_YML = ROOT / "environment.yml"
BINDER = ROOT / "binder"
CI_RUN = ROOT / ".ci" / "run"
MAKEFILE = ROOT / "Makefile"
README = ROOT / "README.md"

# conda-forge name -> PyPI name (after canonicalisation).
ALIASES = {
    "pytorch": "torch",
    "pytorch-cpu": "torch",
    "pytorch-gpu": "torch",
    "matplotlib-base": "matplotlib",
}

LOWER_OPS = (">=", "==", "~=", "===", ">")


def canon(name: str) -> str:
    """PEP 503 normalised name, with conda-forge aliases mapped to PyPI names."""
    name = re.sub(r"[-_.]+", "-", name.strip().lower())
    return ALIASES.get(name, name)


def _pep508(line: str) -> tuple[str, SpecifierSet]:
    req = Requirement(line)
    return canon(req.name), req.specifier


_CONDA_RE = re.compile(r"^\s*((?:[A-Za-z0-9_.\-/]+::)?[A-Za-z0-9_.\-]+)\s*(\[[^\]]*\])?\s*(.*?)\s*$")


def _conda_spec(entry: str) -> tuple[str, SpecifierSet]:
    """Parse a conda MatchSpec (the common forms) into a name and a PEP 440 specifier set.

    Handles `name`, `name>=1,<2`, `name 1.2.*`, `name=1.2`, `name==1.2`, `name>=1 build*`
    and `name[version='>=1,<2',build='cuda*']`.
    """
    m = _CONDA_RE.match(entry)
    assert m, f"cannot parse conda spec {entry!r}"
    name, brackets, rest = m.group(1), m.group(2) or "", m.group(3)
    if "::" in name:  # channel::name
        name = name.split("::", 1)[1]
    version = rest
    vm = re.search(r"version\s*=\s*['\"]([^'\"]*)['\"]", brackets)
    if vm:
        version = vm.group(1)
    version = version.split()[0] if version.split() else ""
    # `name=1.2=build` -> drop the build string
    if version.startswith("=") and not version.startswith("=="):
        version = version[1:].split("=", 1)[0]
        version = version if version.endswith("*") else version + ".*"
    assert "|" not in version, f"OR-specs are not supported by this test: {entry!r}"
    parts = []
    for part in filter(None, (p.strip() for p in version.split(","))):
        if part == "*":
            continue
        if not re.match(r"^(==|!=|<=|>=|<|>|~=)", part):
            part = "==" + part
        part = re.sub(r"(?<=\d)\*$", ".*", part)  # 1.2* -> 1.2.*
        parts.append(part)
    return canon(name), SpecifierSet(",".join(parts))


def _requirement_lines(path: Path) -> list[str]:
    lines = []
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#") or line.startswith("-"):
            continue  # comments, blank lines, pip options (-e, -r, --extra-index-url ...)
        lines.append(line)
    return lines


def _specs_from_env_yml(path: Path) -> dict[str, SpecifierSet]:
    data = yaml.safe_load(path.read_text())
    specs: dict[str, SpecifierSet] = {}
    for dep in data.get("dependencies") or []:
        if isinstance(dep, dict):
            for entry in dep.get("pip") or []:
                entry = str(entry).strip()
                if entry.startswith("-"):
                    continue
                name, spec = _pep508(entry)
                specs[name] = specs.get(name, SpecifierSet()) & spec
        else:
            name, spec = _conda_spec(str(dep))
            specs[name] = specs.get(name, SpecifierSet()) & spec
    return specs


def _specs_from_requirements(path: Path) -> dict[str, SpecifierSet]:
    specs: dict[str, SpecifierSet] = {}
    for line in _requirement_lines(path):
        name, spec = _pep508(line)
        specs[name] = specs.get(name, SpecifierSet()) & spec
    return specs


def _pyproject() -> dict:
    return tomllib.loads(PYPROJECT.read_text())


def _pyproject_specs() -> dict[str, SpecifierSet]:
    """Runtime + `notebooks` dependencies of pyproject.toml (self-references left out)."""
    project = _pyproject()["project"]
    lines = list(project["dependencies"]) + list(project["optional-dependencies"]["notebooks"])
    specs: dict[str, SpecifierSet] = {}
    for line in lines:
        name, spec = _pep508(line)
        if name == "maelib":
            continue
        specs[name] = specs.get(name, SpecifierSet()) & spec
    return specs


def _binder_file() -> Path:
    for name in ("environment.yml", "requirements.txt"):
        if (BINDER / name).exists():
            return BINDER / name
    pytest.fail("binder/ has neither environment.yml nor requirements.txt")


def _binder_specs() -> dict[str, SpecifierSet]:
    path = _binder_file()
    if path.name == "environment.yml":
        return _specs_from_env_yml(path)
    return _specs_from_requirements(path)


def lower_bound(spec: SpecifierSet) -> Version | None:
    bounds = [Version(s.version.removesuffix(".*")) for s in spec if s.operator in LOWER_OPS]
    return max(bounds) if bounds else None


OTHER_FILES = {
    "environment.yml": lambda: _specs_from_env_yml(ENV_YML),
    "binder": _binder_specs,
}


# --------------------------------------------------------------------------- the parsers


@pytest.mark.parametrize(
    ("entry", "name", "inside", "outside"),
    [
        ("pytorch>=2.4,<2.15", "torch", "2.14.1", "2.15.0"),
        ("pytorch 2.5.*", "torch", "2.5.1", "2.6.0"),
        ("numpy=1.26", "numpy", "1.26.4", "1.27.0"),
        ("python>=3.10", "python", "3.11", "3.9"),
        ("pytorch[version='>=2.4,<2.15',build='cuda*']", "torch", "2.4.0", "2.3.1"),
        ("conda-forge::scikit_learn>=1.3 py311*", "scikit-learn", "1.3.0", "1.2.2"),
    ],
)
def test_conda_spec_parser(entry, name, inside, outside):
    got_name, spec = _conda_spec(entry)
    assert got_name == name
    assert spec.contains(inside, prereleases=True)
    assert not spec.contains(outside, prereleases=True)


def test_canon_normalises_names():
    assert canon("PyTorch") == "torch"
    assert canon("scikit_learn") == canon("Scikit-Learn") == "scikit-learn"
    assert canon("PyYAML") == "pyyaml"
    assert _pep508("jsonargparse[signatures]>=4.27")[0] == "jsonargparse"


# --------------------------------------------------------------------------- pyproject


def test_pyproject_metadata():
    data = _pyproject()
    project = data["project"]
    assert project["name"] == "maelib"
    assert lower_bound(SpecifierSet(project["requires-python"])) == Version("3.10")
    assert project["scripts"]["maelib"] == "maelib.train.cli:console"  # main, with errors printed as messages

    init = (ROOT / "maelib" / "__init__.py").read_text()
    version = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', init, re.M)
    assert version, "maelib/__init__.py must define __version__"
    if "version" in project.get("dynamic", []):
        assert data["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "maelib.__version__"}
    else:
        assert project["version"] == version.group(1)


def test_pyproject_extras():
    extras = _pyproject()["project"]["optional-dependencies"]
    names = {key: {_pep508(line)[0] for line in lines} for key, lines in extras.items()}
    assert {"jupyterlab", "ipywidgets", "papermill", "nbval"} <= names["notebooks"]
    assert {"pytest", "hypothesis", "transformers", "nbval", "papermill"} <= names["test"]
    assert {"sphinx", "myst-nb", "sphinx-book-theme"} <= names["docs"]
    assert any(re.fullmatch(r"maelib\[.*docs.*\]", line.replace(" ", "")) for line in extras["test"])
    assert any(re.fullmatch(r"maelib\[.*notebooks.*\]", line.replace(" ", "")) for line in extras["test"])
    assert "ruff" in names["dev"]
    assert any(re.fullmatch(r"maelib\[.*test.*\]", line.replace(" ", "")) for line in extras["dev"])


def test_pyproject_runtime_dependencies():
    names = {_pep508(line)[0] for line in _pyproject()["project"]["dependencies"]}
    expected = {
        "torch", "torchvision", "timm", "lightning", "jsonargparse", "safetensors", "matplotlib",
        "numpy", "ipywidgets", "anywidget", "scikit-learn", "scikit-image", "tensorboard", "pyyaml", "submitit",
        "torchmetrics",
    }  # fmt: skip
    assert expected <= names, f"missing runtime dependencies: {sorted(expected - names)}"
    jsonargparse = next(line for line in _pyproject()["project"]["dependencies"] if "jsonargparse" in line)
    assert "signatures" in Requirement(jsonargparse).extras, "LightningCLI needs jsonargparse[signatures]"


def test_pyproject_torch_range_admits_the_tested_release():
    """pip here resolves torch 2.14.1 + torchvision 0.29.1 (the newest on this disk)."""
    specs = _pyproject_specs()
    assert specs["torch"].contains("2.14.1") and specs["torchvision"].contains("0.29.1")


def test_pytest_config():
    ini = _pyproject()["tool"]["pytest"]["ini_options"]
    assert ini["testpaths"] == ["tests"]
    markers = {m.split(":", 1)[0].strip() for m in ini["markers"]}
    assert {"slow", "gpu"} <= markers
    assert _pyproject()["tool"]["ruff"]["line-length"] == 120


# --------------------------------------------------------------------------- the other files


@pytest.mark.parametrize("other", sorted(OTHER_FILES))
def test_every_dependency_is_listed(other):
    ref = _pyproject_specs()
    got = OTHER_FILES[other]()
    missing = sorted(set(ref) - set(got))
    assert not missing, f"{other} lacks these pyproject.toml dependencies: {missing}"


@pytest.mark.parametrize("other", sorted(OTHER_FILES))
def test_version_ranges_do_not_contradict(other):
    ref = _pyproject_specs()
    got = OTHER_FILES[other]()
    problems = []
    for name in sorted(set(ref) & set(got)):
        a, b = ref[name], got[name]
        lows = [v for v in (lower_bound(a), lower_bound(b)) if v is not None]
        if not lows:
            continue
        lo = max(lows)
        # Both ranges have inclusive lower bounds here, so they overlap iff the larger lower bound is in both.
        if not (a.contains(lo, prereleases=True) and b.contains(lo, prereleases=True)):
            problems.append(f"{name}: pyproject.toml {a or '(any)'} vs {other} {b or '(any)'}")
    assert not problems, "contradicting version ranges:\n" + "\n".join(problems)


@pytest.mark.parametrize("package", ["torch", "torchvision"])
@pytest.mark.parametrize("other", sorted(OTHER_FILES))
def test_torch_lower_bound_is_the_same(other, package):
    ref = lower_bound(_pyproject_specs()[package])
    assert ref is not None, f"pyproject.toml must give {package} a lower bound"
    got = OTHER_FILES[other]().get(package)
    assert got is not None, f"{other} lacks {package}"
    assert lower_bound(got) == ref, f"{package}: pyproject.toml >= {ref}, {other}: {got}"


def test_environment_yml():
    data = yaml.safe_load(ENV_YML.read_text())
    assert data["name"] == "maelib"
    assert "conda-forge" in data["channels"]
    specs = _specs_from_env_yml(ENV_YML)
    python = lower_bound(specs["python"])
    assert python == lower_bound(SpecifierSet(_pyproject()["project"]["requires-python"]))
    pip = next(d["pip"] for d in data["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert any(re.match(r"^-e\s+\.(\[|$)", str(line)) for line in pip), "environment.yml must pip install -e ."
    assert "cuda" in ENV_YML.read_text().lower(), "environment.yml must say how to get the CUDA build"


def test_binder_is_cpu_only_and_installs_maelib():
    path = _binder_file()
    if path.name == "requirements.txt":
        assert "/whl/cpu" in path.read_text(), "binder should take torch from the PyTorch CPU index"
    post_build = BINDER / "postBuild"
    assert post_build.exists(), "binder/postBuild must install maelib and fetch Fashion-MNIST"
    assert os.access(post_build, os.X_OK), "binder/postBuild must be executable"
    text = post_build.read_text()
    assert re.search(r"pip install .*(-e )?\.(\s|$|\[)", text), "binder/postBuild must pip install the package"
    assert "FashionMNIST" in text and "download=True" in text
    start = (BINDER / "start").read_text()
    assert "MAELIB_FASHION_MNIST" in start and "FashionMNIST/raw" in start
    assert re.search(r'^exec "\$@"', start, re.M), 'binder/start must end with exec "$@"'
    runtime = BINDER / "runtime.txt"
    if runtime.exists():
        m = re.match(r"python-(\d+\.\d+)", runtime.read_text().strip())
        assert m and SpecifierSet(_pyproject()["project"]["requires-python"]).contains(m.group(1))


# --------------------------------------------------------------------------- CI, Makefile, README


def _code_lines(text: str) -> list[str]:
    return [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]


def test_ci_runs_make_test():
    lines = _code_lines(CI_RUN.read_text())
    assert "set -euo pipefail" in lines
    assert "make test" in lines, ".ci/run must call `make test`"


def test_makefile_targets():
    text = MAKEFILE.read_text()
    targets = set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, re.M))
    assert {"venv", "install", "data", "test", "run", "lab", "clean", "distclean"} <= targets
    assert re.search(r"^RUN_CMD\s*\?=", text, re.M)
    assert ".installed" in text, "install must be guarded by a stamp file"
    assert not re.search(r"torch(vision)?==", text), "torch versions come from pyproject.toml, not the Makefile"


SHELL_LANGS = {"", "bash", "sh", "shell", "console", "zsh", "shell-session", "terminal"}
COMMAND_WORDS = {
    "make", "pip", "pip3", "python", "python3", "conda", "mamba", "micromamba", "jupyter",
    "pytest", "bash", "sh", "uv", "git", "docker", "maelib", "source", "apt", "apt-get", "sudo",
}  # fmt: skip
FENCE_RE = re.compile(r"^(`{3,}|~{3,})[ \t]*([^\n]*)\n(.*?)^\1[ \t]*$", re.M | re.S)


def readme_commands(text: str) -> list[str]:
    """Shell commands shown in the README, in reading order."""
    found: list[tuple[int, str]] = []
    spans = []
    for m in FENCE_RE.finditer(text):
        spans.append(m.span())
        lang = (m.group(2).split() or [""])[0].lower()
        if lang not in SHELL_LANGS:
            continue
        offset = m.start(3)
        for line in m.group(3).splitlines(keepends=True):
            cmd = re.sub(r"^\s*(\([\w.-]+\)\s*)?[$%>]\s+", "", line).strip()
            if cmd and not cmd.startswith("#"):
                found.append((offset, cmd))
            offset += len(line)
    for m in re.finditer(r"`([^`\n]+)`", text):
        if any(a <= m.start() < b for a, b in spans):
            continue
        cmd = m.group(1).strip()
        first = os.path.basename(cmd.split()[0]) if cmd.split() else ""
        if first in COMMAND_WORDS:
            found.append((m.start(), cmd))
    return [cmd for _, cmd in sorted(found)]


def check_readme_order(text: str) -> None:
    commands = readme_commands(text)
    seen = set()
    for cmd in commands:
        m = re.match(r"^make\s+(run|test)\b", cmd)
        if m:
            seen.add(m.group(1))
            if seen == {"run", "test"}:
                return
        elif not re.match(r"^cd(\s|$)", cmd):
            pytest.fail(f"README.md shows {cmd!r} before both `make run` and `make test`")
    pytest.fail(f"README.md must show `make run` and `make test`; it shows {commands[:5]}")


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("# maelib\n\n```bash\nmake run\nmake test\n```\n\nOr `pip install -e .`\n", True),
        ("Start with `make test`, then `make run`.\n\n```\n$ pip install maelib\n```\n", True),
        ("```bash\npip install -e .\nmake run\nmake test\n```\n", False),
        ("Run `python -m maelib.course.demo` or `make run`; `make test` tests.\n", False),
        ("```bash\nmake run\n```\n", False),
        ("```python\nimport maelib\n```\n```sh\ncd maelib\nmake run  # demo\nmake test\n```\n", True),
    ],
)
def test_readme_checker(text, ok):
    if ok:
        check_readme_order(text)
    else:
        with pytest.raises(pytest.fail.Exception):
            check_readme_order(text)


def test_readme_starts_with_make_run_and_make_test():
    if not README.exists():
        pytest.skip("README.md is not written yet")
    check_readme_order(README.read_text())
