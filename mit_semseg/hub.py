"""Where downloaded files live: `$MIT_SEMSEG_HOME`, by default `~/.cache/mit_semseg`."""
from __future__ import annotations

import os

PRETRAINED_URL = "http://sceneparsing.csail.mit.edu/model/pretrained_resnet/"


def cache_dir() -> str:
    return os.environ.get("MIT_SEMSEG_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "mit_semseg")


def pretrained_path(filename: str) -> str:
    """The ImageNet weights file `filename`, which must already be in the cache."""
    path = os.path.join(cache_dir(), "pretrained", filename)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"ImageNet weights {filename} are not in the cache ({path}) and this version does not download "
            f"them. Fetch {PRETRAINED_URL}{filename} and put it at {path}, or build the encoder without "
            "them (pretrained=False, or MODEL.pretrained False in a config).")
    return path
