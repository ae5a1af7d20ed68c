"""Reading input videos, and every bad input as a one-line UserError before anything is written."""

import pytest
import torch

from gen3d.config import build_config
from gen3d.errors import UserError
from gen3d.utils.media import save_image, write_video
from video.config import VideoEditConfig
from video.control import canny_maps, parse_controls
from video.controlnets import assign_controlnets
from video.demo import moving_shape
from video.io import read_video
from video.run import run_video
from video.validate import validate


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    frames = moving_shape(6, 48).permute(0, 2, 3, 1)
    write_video(d / "v.mp4", frames, fps=12)
    write_video(d / "v.gif", frames, fps=5)
    for i, f in enumerate(frames):
        save_image(d / "folder" / f"{i:03d}.png", f)
    return d


def test_demo_video_moves():
    frames = moving_shape(4, 32, colour="red")
    assert frames.shape == (4, 3, 32, 32)
    red = (frames[:, 0] > 0.5) & (frames[:, 2] < 0.3)  # the red object's pixels
    cols = [float(torch.nonzero(m)[:, 1].float().mean()) for m in red]
    assert cols[0] < cols[1] < cols[2] < cols[3]  # moving left to right


@pytest.mark.parametrize("name,fps", [("v.mp4", 12.0), ("v.gif", 5.0), ("folder", 8.0)])
def test_read_video_formats(demo, name, fps):
    clip = read_video(demo / name, frames=3, stride=2, start=0, size=32)
    assert clip.frames.shape == (3, 3, 32, 32) and clip.indices == [0, 2, 4]
    assert abs(clip.fps - fps) < 0.01
    assert 0 <= float(clip.frames.min()) and float(clip.frames.max()) <= 1


def test_bad_videos(demo, tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "corrupt.mp4").write_bytes(b"not a video at all" * 10)
    (tmp_path / "noimages").mkdir()
    (tmp_path / "noimages" / "readme.txt").write_text("x")
    one = tmp_path / "one.gif"
    write_video(one, torch.rand(1, 16, 16, 3), fps=4)
    mixed = tmp_path / "mixed"
    save_image(mixed / "0.png", torch.rand(16, 16, 3))
    save_image(mixed / "1.png", torch.rand(20, 16, 3))
    cases = [
        (tmp_path / "missing.mp4", 2, "does not exist"),
        (tmp_path / "empty.mp4", 2, "empty"),
        (tmp_path / "corrupt.mp4", 2, "cannot read video"),
        (tmp_path / "noimages", 2, "no images"),
        (one, 2, "at least 2"),
        (mixed, 2, "different sizes"),
        (demo / "v.mp4", 50, "has 6 frames"),
        (demo / "folder", 7, "has 6 frames"),
        (demo / "v.mp4", 1, "at least 2"),
    ]
    for path, frames, msg in cases:
        with pytest.raises(UserError, match=msg) as err:
            read_video(path, frames=frames, size=32)
        assert "\n" not in str(err.value)


def test_controls():
    assert parse_controls(["canny", "depth:0.5"]) == [("canny", 1.0), ("depth", 0.5)]
    for bad, msg in [
        (["sketch"], "unknown --control 'sketch'"),
        (["canny:x"], "must be a number"),
        (["canny", "canny:2"], "twice"),
    ]:
        with pytest.raises(UserError, match=msg):
            parse_controls(bad)
    with pytest.raises(UserError, match="needs a ControlNet"):
        assign_controlnets(None, ["depth"], builtin_model=True)
    edges = canny_maps(moving_shape(2, 48))
    assert edges.shape == (2, 3, 48, 48) and 0 < float(edges.mean()) < 0.3


def _cfg(**kw):
    base = dict(system="tuneavideo", prompt="a blue sphere", edit=["a red sphere"], frames=3)
    return build_config(VideoEditConfig, {**base, **kw})


def test_validate_and_no_partial_output(demo, tiny_pipeline, tmp_path):
    ok = dict(video=str(demo / "v.mp4"), model=str(tiny_pipeline))
    validate(_cfg(**ok))
    bad = [
        (dict(ok, system="controlvideo", control=["hed"]), "unknown --control"),
        (dict(ok, system="controlvideo", control=["canny"]), "needs a ControlNet"),
        (dict(ok, system="tuneavideo3d"), "system must be one of video"),
        (dict(ok, edit=[]), "no edit prompt"),
        (dict(ok, prompt=""), "caption is empty"),
        (dict(ok, frames=9), "has 6 frames"),
        (dict(ok, model=str(tmp_path / "nope")), "not found"),
        (dict(ok, video=str(tmp_path / "nope.mp4")), "does not exist"),
        (dict(ok, sampling={"source_attention": 1.5}), r"sampling.source_attention' must be in \[0, 1\]"),
        (dict(ok, sampling={"source_attention": 0.5, "invert": False}), "needs the inverted source latents"),
    ]
    for kw, msg in bad:
        run_dir = tmp_path / "run"
        run_dir.mkdir(exist_ok=True)
        with pytest.raises(UserError, match=msg):
            run_video(_cfg(**kw), run_dir)
        assert not any(run_dir.iterdir())  # nothing written
