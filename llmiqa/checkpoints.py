"""Finding a checkpoint by hub id or local folder, and naming it for the store."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from llmiqa.raters.base import ModelLoadError


def read_config(source: str, revision: str | None = None) -> dict:
    """config.json of a local folder or a hub repo (downloaded and cached like transformers)."""
    folder = Path(source)
    if folder.is_dir():
        file = folder / "config.json"
        if not file.is_file():
            raise ModelLoadError(f"{source}: no config.json in this folder; not a model checkpoint")
    elif folder.exists() or source.startswith((".", "/")):
        raise ModelLoadError(f"{source}: not a model folder")
    else:
        from huggingface_hub import hf_hub_download

        try:
            file = Path(hf_hub_download(source, "config.json", revision=revision))
        except Exception as error:  # offline, unknown repo, gated, ...
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ModelLoadError(
                f"{source}: cannot fetch config.json from the hub ({first})"
            ) from None
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{file}: unreadable config.json ({error})") from None


def checkpoint_identity(source: str, commit: str | None = None) -> str:
    """A name that changes when the weights may have: hub id@commit, or folder#fingerprint.

    A local folder is fingerprinted by its config.json and the names and sizes of its
    weight files (hashing gigabytes of weights on every start would cost more than it saves).
    """
    folder = Path(source)
    if not folder.is_dir():
        return f"{source}@{commit or 'main'}"
    digest = hashlib.blake2b(digest_size=8)
    config = folder / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
    for weights in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        digest.update(f"{weights.name}:{weights.stat().st_size};".encode())
    return f"{folder.resolve()}#{digest.hexdigest()}"
