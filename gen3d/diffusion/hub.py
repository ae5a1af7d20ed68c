"""Hub ids -> local folders: the standard Hugging Face cache, downloaded on first use (huggingface_hub).

`fetch(repo_id)` returns the snapshot folder of a pipeline (model_index.json) or of a single model (a
ControlNet: config.json at the root). A complete snapshot already in the cache is used without any network
access. Otherwise only the files the prior needs are fetched (`layout.needed_files`: no safety checker, no
root-level .ckpt copies, one weight format and variant per component) with huggingface_hub's progress bars;
an interrupted transfer resumes from the bytes already received (HTTP Range), and files completed by an
earlier run are not fetched again.

Failures are one line (UserError), within seconds, before anything is written: an unreachable hub or
HF_HUB_OFFLINE=1 names what is missing, the command that fetches it and `--model builtin`; a repository that
does not exist (404) or is gated (401/403) says so. The hub address honours HF_ENDPOINT at call time,
the cache HF_HUB_CACHE / HF_HOME; GEN3D_HUB_TIMEOUT (seconds, default 10) bounds every request.

    python -m gen3d.diffusion.hub stabilityai/stable-diffusion-2-1-base   # fetch ahead of a run
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path

from gen3d.diffusion.layout import incomplete_components, needed_files
from gen3d.errors import UserError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
DEFAULT_ENDPOINT = "https://huggingface.co"


def is_hub_id(name: str) -> bool:
    return bool(HUB_ID.match(name)) and not Path(name).expanduser().exists()


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def cache_dir() -> Path:
    """The standard Hugging Face hub cache (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "huggingface"
    return Path(home).expanduser() / "hub"


def timeout() -> float:
    return float(os.environ.get("GEN3D_HUB_TIMEOUT", "10"))


def offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE")
    if value is None:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    return value.strip().lower() in ("1", "on", "yes", "true")


def fetch_command(repo_id: str) -> str:
    return f"python -m gen3d.diffusion.hub {repo_id}"


def cached_snapshot(repo_id: str, revision: str = "main", cache: Path | None = None) -> Path | None:
    """The cached snapshot folder of repo_id at a branch/tag (refs/<revision>) or commit, if present."""
    storage = (cache or cache_dir()) / ("models--" + repo_id.replace("/", "--"))
    ref = storage / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else revision
    snap = storage / "snapshots" / commit
    return snap if snap.is_dir() else None


def _missing(snap: Path | None) -> list[str]:
    """What a cached snapshot lacks (['everything'] when there is none)."""
    if snap is None:
        return ["everything"]
    if (snap / "model_index.json").is_file():
        return incomplete_components(snap)
    return [] if (snap / "config.json").is_file() else ["model_index.json / config.json"]


def _unreachable(repo_id: str, missing: list[str], reason: str) -> UserError:
    what = (
        "is not in the Hugging Face cache"
        if missing == ["everything"]
        else f"is incomplete in the Hugging Face cache (missing: {', '.join(missing)})"
    )
    return UserError(
        f"model '{repo_id}' {what} ({cache_dir()}) and {reason}: fetch it where the hub is reachable "
        f"with `{fetch_command(repo_id)}` (then copy the cache), or run offline with --model builtin"
    )


def _hub_error(repo_id: str, err: Exception, missing: list[str]) -> UserError:
    """The one-line message for an exception raised by a hub request."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(err, GatedRepoError) or (
        isinstance(err, HfHubHTTPError)
        and err.response is not None
        and err.response.status_code in (401, 403)
        and not isinstance(err, RepositoryNotFoundError)
    ):
        return UserError(
            f"model '{repo_id}' is gated or private on the hub ({endpoint()}): accept its licence at "
            f"{endpoint()}/{repo_id} and log in with `hf auth login` (or set HF_TOKEN), "
            "or use --model builtin"
        )
    if isinstance(err, (RepositoryNotFoundError, RevisionNotFoundError)):
        return UserError(
            f"model '{repo_id}' is not a local folder and does not exist on the hub ({endpoint()}): "
            "check the id, or pass a local diffusers folder or --model builtin"
        )
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return _unreachable(repo_id, missing, f"the hub is unreachable ({type(err).__name__}: {first[:160]})")


def fetch(repo_id: str, revision: str = "main") -> Path:
    """The local snapshot folder of a hub pipeline or model, downloading what is missing (see module doc)."""
    snap = cached_snapshot(repo_id, revision)
    missing = _missing(snap)
    if not missing:
        return snap
    if offline():
        raise _unreachable(repo_id, missing, "HF_HUB_OFFLINE=1 is set")
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    for name in ("httpx", "httpx2"):  # their per-request INFO lines would bury the one-line errors
        logging.getLogger(name).setLevel(logging.WARNING)
    api = HfApi(endpoint=endpoint())
    kwargs = dict(repo_id=repo_id, cache_dir=cache_dir(), endpoint=endpoint(), etag_timeout=timeout())
    try:
        info = api.model_info(repo_id, revision=revision, timeout=timeout())
        files = [s.rfilename for s in (info.siblings or [])]
        index = None
        if "model_index.json" in files:
            index = json.loads(
                Path(hf_hub_download(filename="model_index.json", revision=info.sha, **kwargs)).read_text()
            )
        patterns = needed_files(repo_id, files, index)
        print(
            f"fetching '{repo_id}' ({len(patterns)} files, those already cached are kept) from {endpoint()} "
            f"into {cache_dir()}",
            file=sys.stderr,
        )
        path = Path(snapshot_download(revision=revision, allow_patterns=patterns, **kwargs))
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - every hub / network failure becomes one line
        raise _hub_error(repo_id, err, missing) from None
    left = _missing(path)
    if left:
        raise UserError(
            f"model '{repo_id}': the download finished without {', '.join(left)}; run `{fetch_command(repo_id)}` again"
        )
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m gen3d.diffusion.hub ORG/NAME", file=sys.stderr)
        return 2
    try:
        print(fetch(args[0]))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
