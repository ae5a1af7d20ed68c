"""Run reports and the gallery: written from a tiny real run, then opened from file:// in a headless
Chromium (skipped when none is installed; scripts/setup.sh installs Debian's chromium when root)."""

import base64
import io
import re

import numpy as np
import pytest

import launch
from gen3d.report.assets import first_frame, glb_stats
from gen3d.report.gallery import find_runs, write_gallery
from gen3d.report.page import write_report
from gen3d.report.run_info import read_run
from gen3d.report.svg import line_chart
from tests.cdp import Browser, find_chromium

TINY = [
    "camera.height=32",
    "camera.width=32",
    "renderer.num_samples_per_ray=32",
    "export.resolution=40",
    "export.texture_size=64",
    "turntable.n_views=2",
    "turntable.resolution=64",
    "trainer.preview_every=2",
    "trainer.log_every=1",
    "prompt_processor.cache_dir=null",
    "stages=[{name: nerf, overrides: {trainer: {max_steps: 4}}}]",
]


@pytest.fixture(scope="module")
def runs(tiny_pipeline, tmp_path_factory):
    """A 2-particle ProlificDreamer run (its NeRF stage only) and a second seed of it."""
    from gen3d.utils.console import setup_console

    setup_console("normal")  # gen3d's INFO lines (the per-step losses) reach log.txt under pytest too
    out = tmp_path_factory.mktemp("runs")
    for seed in ("0", "1"):
        code = launch.main(
            [
                "--config",
                "prolificdreamer.yaml",
                "--prompt",
                "a red cube",
                "--model",
                str(tiny_pipeline),
                "--output",
                str(out),
                "--particles",
                "2",
                "--seed",
                seed,
                *TINY,
            ]
        )
        assert code == 0
    return out, sorted((out / "prolificdreamer").iterdir())


def test_report_files(runs):
    out, (run, _) = runs
    path = write_report(run)
    html = path.read_text()
    info = read_run(run)
    assert [m.label for m in info.models] == ["particle 0", "particle 1"]
    assert "a red cube" in html and "prolificdreamer" in html and "<svg" in html  # prompt, method, curves
    assert "video/turntable-0.mp4" in html and "previews/nerf/step-000002.png" in html
    assert "report_files/three-viewer.min.js" in html
    links = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert links and not [u for u in links if "://" in u or u.startswith("//")]  # nothing from the network
    for i in range(2):  # each GLB as a script that carries its exact bytes
        text = (run / "report_files" / f"model-{i}.js").read_text()
        b64 = text.split('"]="')[1].split('"')[0]
        assert base64.b64decode(b64) == (run / "export" / f"particle-{i}" / "model.glb").read_bytes()
    assert info.curves["nerf"]["loss"], "loss curve read from the run's logs"
    assert (run / "report_files" / "thumb.png").is_file()


def test_svg_chart_scales_points():
    svg = line_chart({"a": [(0, 1.0), (10, 3.0)]}, "loss", width=200, height=100)
    points = svg.split('points="')[1].split('"')[0].split()
    (x0, y0), (x1, y1) = [tuple(map(float, p.split(","))) for p in points]
    assert x1 > x0 and y1 < y0  # later step to the right, larger value higher up
    assert line_chart({"a": []}, "empty") == ""


def test_gallery_lists_runs(runs):
    out, run_dirs = runs
    index = write_gallery(out)
    html = index.read_text()
    assert find_runs(out) == run_dirs
    assert html.count("<tr>") == 1 + len(run_dirs)
    for run in run_dirs:
        assert f"{run.relative_to(out).as_posix()}/report.html" in html and (run / "report.html").is_file()


def test_report_command_errors(tmp_path, capsys):
    from gen3d.report.__main__ import main

    assert main([str(tmp_path / "missing")]) == 2
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)
    assert not (tmp_path / "index.html").exists()


# ---------------------------------------------------------------- in a real browser


@pytest.fixture(scope="module")
def browser():
    pytest.importorskip("websocket", reason="websocket-client is not installed")
    binary = find_chromium()
    if binary is None:
        pytest.skip("chromium is not installed (scripts/setup.sh installs Debian's chromium when run as root)")
    b = Browser(binary)
    yield b
    b.close()


def _png(data_url: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB"))


def _object_mask(image: np.ndarray, background) -> np.ndarray:
    return (np.abs(image.astype(float) / 255.0 - np.asarray(background)).max(axis=-1)) > 0.15


def _resize(mask_or_image: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(mask_or_image).resize((size, size), Image.BILINEAR))


def test_report_in_chromium(runs, browser):
    out, (run, _) = runs
    write_report(run)
    browser.open((run / "report.html").as_uri())
    browser.wait_for("window.gen3dViewer && window.gen3dViewer.state !== 'loading'")
    assert browser.evaluate("window.gen3dViewer.state") == "ready"
    assert browser.evaluate("window.gen3dViewer.model") == "particle 0"
    shot0 = _png(browser.evaluate("window.gen3dViewer.snapshot()"))
    background = read_run(run).config["background"]["color"]

    # the canvas shows the object where the turntable's first frame shows it, in about its colour
    view = _object_mask(shot0, background)
    assert view.mean() > 0.01, "viewer canvas is blank"
    frame = first_frame(run / "video" / "turntable-0.mp4")
    ref = _object_mask(frame, background)
    size = frame.shape[0]
    view_small = _resize((view * 255).astype(np.uint8), size) > 127
    iou = (view_small & ref).sum() / max((view_small | ref).sum(), 1)
    assert iou > 0.4, f"viewer and turntable silhouettes differ (IoU {iou:.2f})"
    colour_view = _resize(shot0, size)[view_small & ref].mean(axis=0)
    colour_ref = frame[view_small & ref].mean(axis=0)
    assert np.abs(colour_view - colour_ref).max() < 60, (colour_view, colour_ref)

    # the particle selector switches the model shown
    for i in (1, 0):
        browser.evaluate(f"window.gen3dViewer.select({i})")
        browser.wait_for(f"window.gen3dViewer.state === 'ready' && window.gen3dViewer.model === 'particle {i}'")
        stats = glb_stats(run / "export" / f"particle-{i}" / "model.glb")
        assert browser.evaluate("window.gen3dViewer.vertices") == stats["vertices"]
        assert browser.evaluate("document.getElementById('viewer-model').value") == str(i)
    # orbiting moves the view
    browser.evaluate(
        "(() => { const c = document.getElementById('viewer'); const r = c.getBoundingClientRect();"
        "const o = {bubbles: true, pointerId: 1, pointerType: 'mouse', button: 0, buttons: 1,"
        " clientX: r.left + 100, clientY: r.top + 100};"
        "c.dispatchEvent(new PointerEvent('pointerdown', o));"
        "c.ownerDocument.dispatchEvent(new PointerEvent('pointermove', {...o, clientX: r.left + 300}));"
        "c.ownerDocument.dispatchEvent(new PointerEvent('pointerup', {...o, buttons: 0})); })()"
    )
    shot1 = _png(browser.evaluate("window.gen3dViewer.snapshot()"))
    assert np.abs(shot1.astype(int) - shot0.astype(int)).max() > 0
    assert browser.errors() == []


def test_gallery_in_chromium(runs, browser):
    out, run_dirs = runs
    write_gallery(out)
    browser.open((out / "index.html").as_uri())
    rows = "Array.from(document.querySelectorAll('#runs tbody tr'))"
    assert browser.evaluate(f"{rows}.length") == len(run_dirs)
    assert browser.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    # sort by seed, descending on the second click
    seeds = f"{rows}.map(r => r.cells[3].textContent)"
    browser.evaluate("document.querySelectorAll('#runs th')[3].click()")
    assert browser.evaluate(seeds) == ["0", "1"]
    browser.evaluate("document.querySelectorAll('#runs th')[3].click()")
    assert browser.evaluate(seeds) == ["1", "0"]
    # text filter
    browser.evaluate(
        "const f = document.getElementById('filter'); f.value = 'cube-1';f.dispatchEvent(new Event('input'))"
    )
    visible = f"{rows}.filter(r => r.style.display !== 'none').length"
    assert browser.evaluate(visible) == 1
    assert browser.errors() == []
