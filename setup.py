"""Packaging is declared in pyproject.toml; this file only adds the data folders to the wheel: configs/
and extern/ are copied into gen3d/_data/ (found there by gen3d.resources when installed)."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildWithData(build_py):
    def run(self):
        super().run()
        for name in ("configs", "extern"):
            shutil.copytree(HERE / name, Path(self.build_lib) / "gen3d" / "_data" / name, dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildWithData})
