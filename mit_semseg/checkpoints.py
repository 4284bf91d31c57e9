"""Every checkpoint file of the project: its name, its layout, what a user's name for it resolves to, its writing.

Nothing else spells a checkpoint file name. The layouts:
- a model: DIR/encoder_<checkpoint> and DIR/decoder_<checkpoint>, plain state dicts (the original's files); the
  checkpoint of epoch N is `epoch_N.pth`. A Unified Perceptual Parsing model's texture head, when it has one:
  DIR/texture_<checkpoint>.
- a resume state: DIR/<prefix>train_state_epoch_E_iter_I.pth (`prefix`: a training stage's, such as `texture_`),
  after I steps of epoch E (1-based); a finished epoch is iteration 0 of the next.
- a released model: the cache's folder of its name, in the model layout (`zoo`).
- another project's single file (mmsegmentation's `{"meta", "state_dict"}`, recognised from its keys): converted
  once into the model layout, in the cache's `converted/` folder (`foreign_files`).
- a Hugging Face UperNet folder (`config.json` and `model.safetensors` or `pytorch_model.bin`; a Hub repository id
  fetched by huggingface_hub): converted once into the model layout with its class table and our config's options,
  in the cache's `converted/` folder (`hf_model`).

What users name, and where it resolves:
- DIR with VAL.checkpoint, TEST.checkpoint or `--checkpoint` (`epoch_20.pth`), or one of those another project's
  file: `model_files`.
- MODEL.init_from (`--init-from`) and TRAIN.texture_from: a released model's name, a checkpoint folder (its last
  epoch), FOLDER/epoch_N, ENCODER.pth,DECODER.pth, or another project's file: `source_files`.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from . import hf, hub, mmseg, zoo
from .data.classes import write_class_table
from .data.records import write_json
from .models.checkpoint import CheckpointError

PARTS = ("encoder", "decoder")  # the parts every model's checkpoint has
TEXTURE = "texture"  # the optional part: a UPP model's texture head
STATE_NAME = "train_state"
SOURCE_FORMS = (
    "a released model's name, a checkpoint folder, FOLDER/epoch_N, ENCODER.pth,DECODER.pth or an mmsegmentation file"
)
CONVERTED = "converted.json"  # in a converted folder: what it was converted from
_EPOCH = re.compile(r"epoch_(\d+)(\.pth)?")


def epoch_checkpoint(epoch: int) -> str:
    """The checkpoint name of epoch `epoch`: `epoch_N.pth`."""
    return f"epoch_{epoch}.pth"


def part_name(part: str, checkpoint: str) -> str:
    """The file name of one part of a checkpoint: `<part>_<checkpoint>` (`encoder_epoch_20.pth`)."""
    return f"{part}_{checkpoint}"


def part_path(directory: str | os.PathLike, part: str, checkpoint: str) -> str:
    return os.path.join(directory, part_name(part, checkpoint))


def checkpoint_of(path: str | os.PathLike, part: str) -> str:
    """The checkpoint name of a part's file (`DIR/encoder_epoch_3.pth`, "encoder" -> `epoch_3.pth`)."""
    return os.path.basename(path).removeprefix(f"{part}_")


def model_files(
    directory: str | os.PathLike, checkpoint: str, optional: Iterable[str] = (), decoder: str = ""
) -> dict[str, str]:
    """{part: path} of the model `checkpoint` in `directory`: encoder and decoder (a missing one is an error naming
    it), and each `optional` part whose file exists. `checkpoint` may also be another project's file
    (`foreign_files`; `decoder`, the config's MODEL.arch_decoder, must be the file's)."""
    files = {part: part_path(directory, part, checkpoint) for part in PARTS}
    if os.path.isfile(checkpoint) and not os.path.isfile(files["encoder"]):
        return foreign_files(checkpoint, decoder)
    for path in files.values():
        if not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint not found: {path}")
    found = {part: part_path(directory, part, checkpoint) for part in optional}
    return files | {part: path for part, path in found.items() if os.path.isfile(path)}


def epoch_files(directory: str | os.PathLike, epoch: int) -> dict[str, str]:
    """{part: path} of epoch `epoch`'s encoder and decoder in `directory` (whether or not they exist)."""
    return {part: part_path(directory, part, epoch_checkpoint(epoch)) for part in PARTS}


def epochs_in(directory: str | os.PathLike) -> list[int]:
    """The epochs with a decoder file in `directory`, the latest first."""
    files = Path(directory).glob(part_name("decoder", "epoch_*.pth"))
    found = (_EPOCH.fullmatch(checkpoint_of(p, "decoder")) for p in files)
    return sorted((int(m.group(1)) for m in found if m and m.group(2)), reverse=True)


def source_files(source: str, key: str = "MODEL.init_from") -> dict[str, str]:
    """{"encoder": path, "decoder": path} of a model that training starts from (MODEL.init_from, TRAIN.texture_from):
    a released model's name (downloaded once), a Hugging Face UperNet (a Hub id or its folder), a checkpoint folder
    (its latest complete epoch), FOLDER/epoch_N, or ENCODER.pth,DECODER.pth. Errors name `key`."""
    if source in zoo.MODELS:
        return model_files(fetch_released(source), released_checkpoint(source))
    if hf.is_hf_source(source):
        converted, checkpoint, _ = hf_model(source)
        return model_files(converted, checkpoint)
    if "," in source:
        encoder, decoder = (p.strip() for p in source.split(",", 1))
        return {"encoder": encoder, "decoder": decoder}
    if os.path.isfile(source):
        return foreign_files(source)
    path = Path(source)
    match = _EPOCH.fullmatch(path.name)
    if match and path.parent.is_dir():
        folder, epochs = path.parent, [int(match.group(1))]
    elif path.is_dir():
        folder, epochs = path, epochs_in(path)
    else:
        raise FileNotFoundError(f"{key} '{source}': no such released model, folder or files; give {SOURCE_FORMS}")
    for epoch in epochs:
        files = epoch_files(folder, epoch)
        if all(os.path.isfile(f) for f in files.values()):
            return files
    raise FileNotFoundError(
        f"{key} '{source}': no {part_name('encoder', 'epoch_N.pth')} and {part_name('decoder', 'epoch_N.pth')} "
        f"pair in {folder}"
    )


def foreign_files(path: str | os.PathLike, decoder: str = "") -> dict[str, str]:
    """{"encoder": path, "decoder": path} of another project's checkpoint file (mmsegmentation's), converted into our
    layout once (again when the file changes) under the cache's `converted/` folder. `decoder`: the config's
    MODEL.arch_decoder, which must be the file's (a UPerHead file is `uperhead`, a PSPHead file `ppm`)."""
    path = os.path.realpath(path)
    stat = os.stat(path)
    key = hashlib.sha256(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    name = Path(path).stem
    folder = os.path.join(hub.cache_dir(), "converted", f"{name}-{key}")
    files = {part: part_path(folder, part, f"{name}.pth") for part in PARTS}
    record = os.path.join(folder, CONVERTED)
    if not os.path.isfile(record):
        parts = mmseg.read(path)
        os.makedirs(folder, exist_ok=True)
        atomic_save(parts.encoder_state, files["encoder"])
        atomic_save(parts.decoder_state, files["decoder"])
        # several processes (torchrun's ranks) may convert at once: each writes its own temporary file
        write_json(record, {"source": path, "format": "mmsegmentation", "decoder": parts.decoder})
    with open(record) as f:
        converted = json.load(f)["decoder"]
    if decoder and converted != decoder:
        raise CheckpointError(
            f"{path}: mmsegmentation's checkpoint of a '{converted}' decoder here; the config's MODEL.arch_decoder is "
            f"'{decoder}' (use a preset of this model, or MODEL.arch_decoder {converted})"
        )
    return files


HF_CONVERSION = 2  # a cached conversion of another version is not used: its options may differ


def hf_model(source: str) -> tuple[str, str, list[str]]:
    """A Hugging Face UperNet (a Hub repository id, fetched into huggingface_hub's cache, or a local folder in its
    layout), converted into our layout once (again when its files change) under the cache's `converted/` folder:
    (that folder, the checkpoint's name there, our config options of the model, DIR and TEST/VAL.checkpoint
    included)."""
    folder = source if os.path.isdir(source) else hub.hf_snapshot(source)
    files = [
        os.path.join(folder, n)
        for n in (hf.CONFIG, hf.SAFETENSORS, hf.PICKLED, hf.PREPROCESSOR)
        if os.path.isfile(os.path.join(folder, n))
    ]
    stamps = (f"{os.path.realpath(f)}:{os.stat(f).st_size}:{os.stat(f).st_mtime_ns}" for f in files)
    stamp = ":".join((str(HF_CONVERSION), *stamps))
    name = Path(source.rstrip("/")).name
    converted = os.path.join(
        hub.cache_dir(), "converted", f"hf-{name}-{hashlib.sha256(stamp.encode()).hexdigest()[:16]}"
    )
    checkpoint, record = f"{name}.pth", os.path.join(converted, CONVERTED)
    if not os.path.isfile(record):
        model = hf.read_folder(folder)
        os.makedirs(converted, exist_ok=True)
        atomic_save(model.encoder_state, part_path(converted, "encoder", checkpoint))
        atomic_save(model.decoder_state, part_path(converted, "decoder", checkpoint))
        table = os.path.join(converted, "class_info.csv")
        write_class_table(table, model.class_names)
        options = hf.config_options(model, table)
        write_json(record, {"source": os.path.realpath(folder), "format": "huggingface", "options": options})
    with open(record) as f:
        options = json.load(f)["options"]
    return (
        converted,
        checkpoint,
        [*options, "DIR", converted, "TEST.checkpoint", checkpoint, "VAL.checkpoint", checkpoint],
    )


def hub_imagenet(encoder: str, repo_id: str) -> str:
    """The ImageNet weights of our `encoder` from the Hugging Face Hub's classification model `repo_id` (fetched
    into huggingface_hub's cache), converted into our encoder's file once, in the cache's `converted/` folder."""
    path = os.path.join(hub.cache_dir(), "converted", f"imagenet-{repo_id.replace('/', '--')}-{encoder}.pth")
    if not os.path.isfile(path):
        state = hf.imagenet_state(hub.hf_snapshot(repo_id), encoder)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_save(state, path)
    return path


def _released_folder(name: str) -> str:
    return os.path.join(hub.cache_dir(), "ckpt", name)


def released_checkpoint(name: str) -> str:
    """The checkpoint of the released model `name` in its folder (`fetch_released`): the original's `epoch_20.pth`,
    or the path of mmsegmentation's single file."""
    model = zoo.lookup(name)
    if model.file:
        return os.path.join(_released_folder(name), os.path.basename(model.file))
    return epoch_checkpoint(model.epoch)


def released_urls(name: str) -> dict[str, str]:
    """{part: URL} of the released model `name`: its publisher's folder of the name, in the model layout; or
    {"file": URL} of mmsegmentation's single file on OpenMMLab's site ($MIT_SEMSEG_OPENMMLAB_URL)."""
    model = zoo.lookup(name)
    if model.file:
        return {"file": hub.openmmlab_url(model.file)}
    checkpoint = released_checkpoint(name)
    return {part: f"{hub.model_url(model.base_url)}{name}/{part_name(part, checkpoint)}" for part in PARTS}


def fetch_released(name: str) -> str:
    """Download the released model `name` into the cache (once; a file whose SHA-256 does not start as its name says
    is refused and not kept); returns its folder (DIR for `model_files` with `released_checkpoint`)."""
    directory, checkpoint = _released_folder(name), released_checkpoint(name)
    for part, url in released_urls(name).items():
        path = checkpoint if part == "file" else part_path(directory, part, checkpoint)
        hub.download(url, path, sha256=hub.name_hash(path))
    return directory


def atomic_save(obj: object, path: str | os.PathLike) -> None:
    """torch.save to a temporary file in the same folder, then rename: never a truncated file."""
    tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


BEST_CHECKPOINT = "best.pth"  # TRAIN.best_metric's epoch: DIR/encoder_best.pth, decoder_best.pth (VAL.checkpoint)


def best_record_path(directory: str | os.PathLike, prefix: str = "") -> str:
    """Which epoch DIR's best checkpoint is, and its figure (JSON)."""
    return os.path.join(directory, f"{prefix}best.json")


def copy_checkpoint(directory: str | os.PathLike, source: str, target: str, parts: Iterable[str]) -> None:
    """Each part's file of checkpoint `source` copied to checkpoint `target` in `directory`, atomically."""
    for part in parts:
        destination = part_path(directory, part, target)
        tmp = f"{destination}.tmp{os.getpid()}"
        shutil.copyfile(part_path(directory, part, source), tmp)
        os.replace(tmp, destination)


def remove_epochs_before(directory: str | os.PathLike, epoch: int, parts: Iterable[str]) -> list[str]:
    """TRAIN.keep_last: remove the parts' files of the epochs before `epoch` (the best checkpoint is other files);
    returns the names removed."""
    removed = []
    for part in parts:
        for path in Path(directory).glob(part_name(part, "epoch_*.pth")):
            match = _EPOCH.fullmatch(checkpoint_of(path, part))
            if match and match.group(2) and int(match.group(1)) < epoch:
                path.unlink()
                removed.append(path.name)
    return sorted(removed)


def save_parts(directory: str | os.PathLike, checkpoint: str, parts: Mapping[str, nn.Module]) -> list[str]:
    """Write each part's state dict as DIR/<part>_<checkpoint>, atomically; returns the file names."""
    for part, module in parts.items():
        atomic_save(module.state_dict(), part_path(directory, part, checkpoint))
    return [part_name(part, checkpoint) for part in parts]


def state_path(directory: str | os.PathLike, epoch: int, iteration: int, prefix: str = "") -> str:
    """The resume state after `iteration` steps of epoch `epoch` (of the stage with `prefix`)."""
    return os.path.join(directory, f"{prefix}{STATE_NAME}_epoch_{epoch}_iter_{iteration}.pth")


def state_pattern(prefix: str = "") -> str:
    """How a stage's resume states are named, for messages."""
    return f"{prefix}{STATE_NAME}_epoch_*_iter_*.pth"


def latest_state(directory: str | os.PathLike, prefix: str = "") -> str | None:
    """The resume state (of the stage with `prefix`) furthest into training in `directory`, if any."""
    found = []
    pattern = re.compile(rf"{re.escape(prefix)}{STATE_NAME}_epoch_(\d+)_iter_(\d+)\.pth")
    for path in glob.glob(os.path.join(glob.escape(os.fspath(directory)), state_pattern(prefix))):
        match = pattern.fullmatch(os.path.basename(path))
        if match:
            found.append((int(match.group(1)), int(match.group(2)), path))
    return max(found)[2] if found else None


def load_state(path: str | os.PathLike) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)
