"""Downloads into a cache (`$MIT_SEMSEG_HOME`, by default `~/.cache/mit_semseg`): resumable, atomic, verified."""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.request

from .progress import Progress

PRETRAINED_URL = "http://sceneparsing.csail.mit.edu/model/pretrained_resnet/"
MODEL_URL = "http://sceneparsing.csail.mit.edu/model/pytorch/"
UPP_MODEL_URL = "http://sceneparsing.csail.mit.edu/model/unified_perceptual_parsing/"
OPENMMLAB_URL = "https://download.openmmlab.com"
CHUNK = 1 << 20


def pretrained_url() -> str:
    """Base URL of the ImageNet weights; $MIT_SEMSEG_PRETRAINED_URL points it at a mirror."""
    return os.environ.get("MIT_SEMSEG_PRETRAINED_URL", PRETRAINED_URL)


def model_url(default: str = MODEL_URL) -> str:
    """Base URL of the released models (`default`: the original's folder); $MIT_SEMSEG_MODEL_URL points at a mirror."""
    return os.environ.get("MIT_SEMSEG_MODEL_URL", default)


def openmmlab_url(path: str) -> str:
    """`path` below OpenMMLab's download site; $MIT_SEMSEG_OPENMMLAB_URL stands for https://download.openmmlab.com
    (a mirror that keeps the paths below it)."""
    return os.environ.get("MIT_SEMSEG_OPENMMLAB_URL", OPENMMLAB_URL).rstrip("/") + "/" + path.lstrip("/")


def name_hash(filename: str) -> str | None:
    """The start of the SHA-256 digest that OpenMMLab's file names end with (`resnet50_v1c-2cccc1ad.pth`), or None."""
    match = re.search(r"-([0-9a-f]{8,64})\.pth$", os.path.basename(filename))
    return match.group(1) if match else None


class DownloadError(RuntimeError):
    """A download that failed; the message says where to put the file by hand."""


def cache_dir() -> str:
    return os.environ.get("MIT_SEMSEG_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "mit_semseg")


def pretrained_path(filename: str, openmmlab_folder: str = "") -> str:
    """The ImageNet weights file `filename` in the cache, downloaded first if needed: from the original's server, or
    from `openmmlab_folder` on OpenMMLab's site (checked against the digest its name ends with)."""
    path = os.path.join(cache_dir(), "pretrained", filename)
    if openmmlab_folder:
        return download(openmmlab_url(f"{openmmlab_folder}/{filename}"), path, name_hash(filename))
    return download(pretrained_url() + filename, path)


def sha256sum(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _open(url: str, start: int, timeout: float, by_hand: str):
    """The response for `url` from byte `start` (a range request when above 0); None when the partial file is
    already whole (HTTP 416)."""
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code != 416 or not start:  # 416: the partial file is already whole
            raise DownloadError(f"download of {url} failed: HTTP {err.code} {err.reason}; {by_hand}") from err
        return None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(f"download of {url} failed ({reason}); check the network or {by_hand}") from err


def _receive(response, url: str, part: str, start: int, name: str, progress: bool, by_hand: str) -> None:
    """Append the response's body to `part` (from the start when the server ignored the range), checking its length."""
    with response:
        if start and response.status != 206:  # the server ignored the range: start over
            start = 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        every = None if total else 64 * CHUNK
        try:
            with (
                open(part, "ab" if start else "wb") as f,
                Progress(total, name, unit="B", initial=start, every=every, enabled=progress, unit_scale=True) as bar,
            ):
                for block in iter(lambda: response.read(CHUNK), b""):
                    f.write(block)
                    bar.update(len(block))
        except OSError as err:
            raise DownloadError(f"download of {url} broke off ({err}); run again to resume, or {by_hand}") from err
        if total is not None and os.path.getsize(part) != total:
            raise DownloadError(
                f"download of {url} is truncated ({os.path.getsize(part)} of {total} bytes); "
                f"run again to resume, or {by_hand}"
            )


def download(url: str, dest: str, sha256: str | None = None, timeout: float = 10.0, progress: bool = True) -> str:
    """Fetch `url` to `dest` unless it is already there; returns `dest`.

    A partial `dest.part` from an earlier attempt is resumed with an HTTP range request. The
    file appears at `dest` only when complete (and, with `sha256`, verified: the whole digest, or its first
    characters, as OpenMMLab's file names carry them).
    """
    if os.path.isfile(dest) and (sha256 is None or sha256sum(dest).startswith(sha256)):
        return dest
    by_hand = f"download the file yourself and put it at {dest}"
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    part = dest + ".part"
    start = os.path.getsize(part) if os.path.isfile(part) else 0
    response = _open(url, start, timeout, by_hand)
    if response is not None:
        _receive(response, url, part, start, os.path.basename(dest), progress, by_hand)
    if sha256 is not None:
        actual = sha256sum(part)
        if not actual.startswith(sha256):
            os.remove(part)
            raise DownloadError(
                f"download of {url} is corrupt: SHA-256 {actual}, expected {sha256}; "
                f"the bad file was removed; run again, or {by_hand}"
            )
    os.replace(part, dest)
    return dest


HF_FILES = ["config.json", "model.safetensors", "pytorch_model.bin", "preprocessor_config.json"]


def hf_snapshot(repo_id: str) -> str:
    """The local folder of a Hugging Face Hub repository's model files (fetched once into huggingface_hub's cache;
    its HF_ENDPOINT, HF_HUB_OFFLINE, HF_HUB_CACHE and HF_HOME apply), for `checkpoints.hf_model`."""
    try:
        import huggingface_hub
    except ModuleNotFoundError as err:
        raise DownloadError(
            f"fetching {repo_id} from the Hugging Face Hub needs huggingface_hub: pip install 'mit_semseg[hf]'"
        ) from err
    env = os.environ  # read now, not when huggingface_hub was imported: a process may set them later
    cache = env.get("HF_HUB_CACHE") or (os.path.join(env["HF_HOME"], "hub") if env.get("HF_HOME") else None)
    offline = env.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
    try:
        return huggingface_hub.snapshot_download(
            repo_id, allow_patterns=HF_FILES, endpoint=env.get("HF_ENDPOINT"), cache_dir=cache, local_files_only=offline
        )
    except Exception as err:  # its errors: offline, unknown repository, HTTP failures
        raise DownloadError(f"cannot fetch {repo_id} from the Hugging Face Hub: {type(err).__name__}: {err}") from err


def main(argv: list[str] | None = None) -> int:
    """`python -m mit_semseg.hub URL DEST`: download one file (resumable, atomic)."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="Download a file (resumable; written only when complete).")
    parser.add_argument("url")
    parser.add_argument("dest")
    parser.add_argument("--sha256", help="expected SHA-256 digest")
    args = parser.parse_args(argv)
    try:
        download(args.url, args.dest, args.sha256)
    except DownloadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
