"""Finding a checkpoint by hub id or local folder, and naming it for the store."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from llmiqa.errors import ModelLoadError, one_line

# Small files that change what a checkpoint does: configs, tokenizer, chat template.
_SMALL_FILES = ("*.json", "*.jinja", "*.txt", "*.model")
_WEIGHT_FILES = ("*.safetensors", "*.bin")


def read_config(source: str, revision: str | None = None) -> tuple[dict, str | None]:
    """config.json of a local folder or a hub repo, and the hub commit (None for a folder).

    Hub files are downloaded and cached exactly as transformers does.
    """
    folder = Path(source)
    commit = None
    if folder.is_dir():
        file = folder / "config.json"
        if not file.is_file():
            raise ModelLoadError(f"{source}: no config.json in this folder; not a model checkpoint")
    elif folder.exists() or source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise ModelLoadError(f"{source}: no such model folder, and not a hub id (owner/name)")
    else:
        from huggingface_hub import hf_hub_download

        try:
            file = Path(hf_hub_download(source, "config.json", revision=revision))
        except Exception as error:  # offline, unknown repo, gated, ...
            raise ModelLoadError(
                f"{source}: cannot fetch config.json from the hub ({one_line(error)})"
            ) from None
        commit = file.parent.name  # .../snapshots/<commit>/config.json
    try:
        return json.loads(file.read_text()), commit
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{file}: unreadable config.json ({error})") from None


def checkpoint_identity(source: str, commit: str | None = None) -> str:
    """A name that changes when the checkpoint may have: hub id@commit, or folder#fingerprint.

    A local folder is fingerprinted by its small files (configs, tokenizer, chat template)
    and the names and sizes of its weight files: hashing gigabytes of weights on every
    start would cost more than it saves.
    """
    folder = Path(source)
    if not folder.is_dir():
        return f"{source}@{commit or 'unknown'}"
    digest = hashlib.blake2b(digest_size=8)
    for pattern in _SMALL_FILES:
        for file in sorted(folder.glob(pattern)):
            digest.update(file.name.encode() + b"\0" + file.read_bytes())
    for pattern in _WEIGHT_FILES:
        for file in sorted(folder.glob(pattern)):
            digest.update(f"{file.name}:{file.stat().st_size};".encode())
    return f"{folder.resolve()}#{digest.hexdigest()}"
