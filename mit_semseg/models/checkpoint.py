"""Reading state dicts from disk safely and loading them strictly, with errors that name the file."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import torch
from torch import nn

# Buffers an old checkpoint may lack; nothing else may be missing.
OPTIONAL_KEYS = ("num_batches_tracked",)
MAX_LISTED = 10


class CheckpointError(ValueError):
    """A weights file that cannot be read, or whose keys or shapes do not fit the model."""


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state dict with `weights_only=True`: plain, or under `state_dict` as OpenMMLab's files hold it (beside
    their `meta`); a `module.` prefix is stripped."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path}: not a readable PyTorch weights file ({err})") from err
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise CheckpointError(f"{path}: expected a state dict mapping names to tensors, found {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _listing(title: str, items: list[str]) -> str:
    more = f" ... and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return f"\n  {title} ({len(items)}): " + ", ".join(items[:MAX_LISTED]) + more


def load_weights(
    module: nn.Module,
    path: str | os.PathLike,
    drop_prefixes: Iterable[str] = (),
    optional_suffixes: Iterable[str] = OPTIONAL_KEYS,
) -> None:
    """Load `path` into `module` strictly, except for keys ending in `optional_suffixes`.

    Keys starting with one of `drop_prefixes` (an ImageNet classifier, say) are ignored.
    """
    drop = tuple(drop_prefixes)
    state = {k: v for k, v in read_state_dict(path).items() if not (drop and k.startswith(drop))}
    _check_fit(module, state, path, tuple(optional_suffixes))
    module.load_state_dict(state, strict=False)


def _check_fit(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    path,
    optional: tuple[str, ...],
    renewable: tuple[str, ...] = (),
) -> None:
    """CheckpointError naming every key of `state` or `module` that does not fit, but those under `renewable`."""
    expected = module.state_dict()
    kept = lambda k: not (renewable and k.startswith(renewable))
    missing = [k for k in expected if k not in state and not k.endswith(optional) and kept(k)]
    unexpected = [k for k in state if k not in expected and kept(k)]
    misshaped = [
        f"{k} (file {tuple(v.shape)}, model {tuple(expected[k].shape)})"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape and kept(k)
    ]
    if missing or unexpected or misshaped:
        message = f"{os.fspath(path)} does not fit {type(module).__name__}:"
        for title, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("mis-shaped keys", misshaped),
        ):
            if items:
                message += _listing(title, items)
        raise CheckpointError(message)


def load_matching(
    module: nn.Module, path: str | os.PathLike, renewable: Iterable[str] = (), optional_suffixes: Iterable[str] = ()
) -> tuple[list[str], list[str]]:
    """Load the tensors of `path` whose names and shapes fit `module`; the module's tensors under the `renewable`
    prefixes that do not (a classifier for other classes) keep their fresh values. Anything else that does not
    fit is a CheckpointError naming the keys. Returns the names loaded and those kept fresh."""
    renewable, optional = tuple(renewable), tuple(optional_suffixes) + OPTIONAL_KEYS
    state = read_state_dict(path)
    _check_fit(module, state, path, optional, renewable)
    expected = module.state_dict()
    loaded = [k for k in expected if k in state and state[k].shape == expected[k].shape]
    module.load_state_dict({k: state[k] for k in loaded}, strict=False)
    return loaded, [k for k in expected if k not in loaded and not k.endswith(optional)]
