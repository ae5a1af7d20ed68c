"""Checkpoints and resumes that survive kills, full disks and bad files (issue 14).

- `checkpoint_io`: checkpoint files written atomically in their own directory (temporary file, fsync,
  rename) and read with `weights_only=True`; `AtomicCheckpointIO` is Lightning's plugin for it.
- `checkpoints`: `RunCheckpoints`, the one checkpoint callback of a run (step files, `last.ckpt`, how
  many are kept, the RNG state, Ctrl-C and NaN stops), and `newest_state`, what a resume continues.
- `lineage`: which checkpoint each stage of a resumed run continues; checks against the config.
- `interrupt`: Ctrl-C saves a checkpoint after the current step and exits 130.
- `bad_steps`: the runtime NaN stop (`trainer.max_bad_steps`).
- `versions`: the torch version check (weights-only loading by default needs torch >= 2.6).
"""
