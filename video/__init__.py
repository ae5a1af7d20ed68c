"""One-shot video editing on a pretrained 2D diffusion prior: Tune-A-Video and ControlVideo.

    video ──► frames (+ control maps) ──► inflated UNet fine-tuned on (frames, source prompt)
          ──► DDIM inversion ──► sampling with the edited prompt(s) ──► mp4 / gif / PNGs

Modules: `config` (VideoEditConfig), `io` (reading videos), `demo` (rendered test videos),
`attention` + `inflate` (frame / temporal attention on diffusers' attention-processor API),
`control` (control maps, ControlNets), `tune` (Lightning fine-tuning), `ddim` (inversion and
sampling), `metrics`, `run` (the system's entry points run_video / validate).
"""
