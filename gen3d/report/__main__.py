"""python -m gen3d.report outputs/        -> outputs/index.html over every run below (reports written
                                         for runs that have none)
python -m gen3d.report RUN_DIR         -> RUN_DIR/report.html"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gen3d.report", description=__doc__.split("\n")[0].strip())
    p.add_argument("path", help="a folder of runs (writes index.html) or one run directory (writes report.html)")
    p.add_argument("--refresh", action="store_true", help="gallery: rewrite every run's report.html first")
    args = p.parse_args(argv)
    from gen3d.report.gallery import find_runs, write_gallery
    from gen3d.report.page import write_report
    from gen3d.report.run_info import is_run_dir

    path = Path(args.path)
    if not path.is_dir():
        print(f"error: '{path}' is not a folder", file=sys.stderr)
        return 2
    if is_run_dir(path):
        print(write_report(path))
        return 0
    if not find_runs(path):
        print(f"error: no gen3d runs (folders with a config.yaml) under '{path}'", file=sys.stderr)
        return 2
    print(write_gallery(path, refresh=args.refresh))
    return 0


if __name__ == "__main__":
    sys.exit(main())
