"""Build step (everything else is in pyproject.toml): a wheel carries the YAML presets and the notebooks in
maelib/_bundled/, so that `maelib pretrain --config fmnist` and `maelib notebooks DIR` work after `pip install`.
The repository keeps one copy of each, in configs/ and notebooks/ (see maelib/course/presets.py)."""

import importlib.util
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# which files: maelib/course/presets.py says (it imports nothing beyond the standard library, so it loads here alone)
_spec = importlib.util.spec_from_file_location("maelib_presets", ROOT / "maelib" / "course" / "presets.py")
presets = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(presets)


class BuildWithBundle(build_py):
    def run(self):
        super().run()
        if self.editable_mode:  # an editable install reads the clone's folders directly
            return
        for folder, patterns in presets.BUNDLED_FILES.items():
            for pattern in patterns:
                for src in sorted((ROOT / folder).glob(pattern)):
                    dst = Path(self.build_lib) / "maelib" / "_bundled" / folder / src.relative_to(ROOT / folder)
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, dst)


setup(cmdclass={"build_py": BuildWithBundle})
