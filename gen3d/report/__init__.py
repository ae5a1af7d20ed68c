"""Run reports (report.html per run directory) and the gallery over many runs (index.html)."""


def write_report(run_dir):
    from gen3d.report.page import write_report as write

    return write(run_dir)


def write_gallery(root):
    from gen3d.report.gallery import write_gallery as write

    return write(root)
