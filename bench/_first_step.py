"""Helper of bench_startup.py: runs REPO/launch.py with ARGS and, at the first training step, writes the
wall-clock time to $GEN3D_FIRST_STEP_FILE and exits (nothing after the first step is timed).

    python bench/_first_step.py REPO ARGS...
"""

import importlib.abc
import importlib.util
import os
import runpy
import sys
import time

repo, args = sys.argv[1], sys.argv[2:]
sys.path.insert(0, repo)
sys.argv = [os.path.join(repo, "launch.py"), *args]
out = os.environ["GEN3D_FIRST_STEP_FILE"]


TARGET = "lightning.pytorch.strategies.strategy"


def _patch(module):
    def training_step(strategy, *args, **kwargs):
        with open(out, "w") as f:
            f.write(repr(time.time()))
        os._exit(0)

    module.Strategy.training_step = training_step


class _Hook(importlib.abc.MetaPathFinder):
    """Patches Lightning's Strategy.training_step when the run imports it (the import stays where it was)."""

    def find_spec(self, name, path=None, target=None):
        if name != TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            _patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


sys.meta_path.insert(0, _Hook())
runpy.run_path(sys.argv[0], run_name="__main__")
