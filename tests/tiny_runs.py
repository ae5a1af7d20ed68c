"""The overrides that shrink a 3D method run to a few seconds (32 px renders, a small export, a preview
every 2 steps, a log line every step), shared by the tests that launch whole tiny runs."""

TINY_3D = [
    "camera.height=32",
    "camera.width=32",
    "renderer.num_samples_per_ray=32",
    "export.resolution=40",
    "export.texture_size=64",
    "turntable.n_views=2",
    "turntable.resolution=32",
    "trainer.preview_every=2",
    "trainer.log_every=1",
    "prompt_processor.cache_dir=null",
]
