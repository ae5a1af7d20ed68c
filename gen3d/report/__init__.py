"""Run reports (report.html per run directory) and the gallery over many runs (index.html)."""

import logging


def write_report(run_dir):
    from gen3d.report.page import write_report as write

    return write(run_dir)


def update_report(run_dir):
    """write_report during a run: a report that cannot be written is a warning, never the run's end."""
    try:
        return write_report(run_dir)
    except Exception as err:  # noqa: BLE001 - the run's results matter more than its report
        logging.getLogger("gen3d").warning("could not write %s/report.html: %s", run_dir, err)
        return None


def write_gallery(root):
    from gen3d.report.gallery import write_gallery as write

    return write(root)
