"""Finding a checkpoint (local folder, local file, or hub id) and naming it for the store.

One resolver for every model the tool loads. What identifies a checkpoint:
- a hub id: the repository and the commit the revision resolved to (hub commits are
  immutable, so the same commit is the same files);
- a local folder or file: the content of its files. Weights are hashed once and the hash
  is cached (`hash_cache_path`) by path, size, modification time, inode and inode change
  time, so a 15 GB model is read once, and a file rewritten in place gets a new identity
  even when its size and mtime are restored (`cp -p`, `rsync -t`, `tar x` set the mtime
  back, nothing sets the ctime back). Each cache entry carries a checksum: a damaged entry
  is hashed again, never trusted.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import socket
import tempfile
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from urllib.parse import urlparse

from llmiqa.errors import ModelLoadError, one_line

# Files that change what a checkpoint does: weights, configs, tokenizer, chat template.
IDENTITY_FILES = (
    "*.safetensors",
    "*.bin",
    "*.pt",
    "*.pth",
    "*.json",
    "*.jinja",
    "*.txt",
    "*.model",
    "*.yaml",
)
_HASH_CHUNK = 1 << 24
_RACY_NS = 2_000_000_000  # files younger than this are never cached


@dataclass(frozen=True)
class Checkpoint:
    """A resolved checkpoint: where its files are (or come from) and what names it."""

    source: str  # as the user gave it
    config: dict = field(repr=False)  # config.json; {} for a single-file checkpoint
    commit: str | None = None  # hub commit; None for local files
    path: Path | None = None  # the local folder or file; None for a hub id

    @cached_property
    def identity(self) -> str:
        """Computed once: the name of the files as they were when first asked."""
        if self.commit is not None:  # a hub commit's files never change
            return f"{self.source}@{self.commit}"
        return f"{self.path}#{content_hash(self.path)}"

    def local_folder(self, patterns: tuple[str, ...] | None = None) -> Path:
        """The files on this disk: the folder itself, or the hub snapshot at `commit`
        (downloaded and cached as transformers does; `patterns` limits what is fetched)."""
        if self.path is not None:
            return self.path
        from huggingface_hub import snapshot_download

        try:
            folder = snapshot_download(self.source, revision=self.commit, allow_patterns=patterns)
        except Exception as error:
            raise ModelLoadError(hub_problem(self.source, error)) from None
        return Path(folder)


def input_embeddings(checkpoint: Checkpoint):
    """The language model's input embedding table, read alone from the checkpoint's
    safetensors files (the one tensor named *embed_tokens.weight)."""
    from safetensors import safe_open

    folder = checkpoint.local_folder(("*.json", "*.safetensors"))
    found = []
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(file, "pt") as weights:
            names = weights.keys()  # a safe_open handle is not iterable itself
        found += [(file, name) for name in names if name.endswith("embed_tokens.weight")]
    if len(found) != 1:
        names = [name for _, name in found] or "none"
        raise ModelLoadError(
            f"{checkpoint.source}: cannot tell its input embedding table among its weights "
            f"(tensors named *embed_tokens.weight: {names})"
        )
    file, name = found[0]
    with safe_open(file, "pt") as weights:
        return weights.get_tensor(name)


def split_revision(source: str) -> tuple[str, str | None]:
    """ "owner/name@revision" -> (owner/name, revision); an existing path is taken whole."""
    name, at, revision = source.rpartition("@")
    if not at or Path(source).exists() or not name:
        return source, None
    return name, revision


def resolve(source: str, revision: str | None = None, *, config: bool = True) -> Checkpoint:
    """A checkpoint by local path (folder or file) or hub id; one line on any problem.

    A path that exists is always taken as a path. One that does not exist is tried on the
    hub only if it reads as a hub id (owner/name); the message then names both readings.
    `config=False` accepts checkpoints without config.json (single files such as SAM2's
    original .pt), a file of a hub repo among them (owner/name/path/file, downloaded).
    """
    if not source:
        raise ModelLoadError("an empty model name was given")
    path = Path(source).expanduser()
    if path.exists():
        return _local(source, path.resolve(), revision, config)
    slashes = source.count("/")
    if source.startswith((".", "/", "~")) or slashes < 1 or (slashes > 1 and config):
        raise ModelLoadError(f"{source}: no such file or folder (and not a hub id owner/name)")
    if slashes > 1:
        repo, filename = source.split("/", 2)[:2], source.split("/", 2)[2]
        file, commit = hub_file("/".join(repo), filename, revision)
        return Checkpoint(source, {}, commit, file)
    commit, data = _hub(source, revision, config)
    return Checkpoint(source, data, commit)


def hub_file(repo: str, filename: str, revision: str | None = None) -> tuple[Path, str]:
    """One file of a hub repo, downloaded and cached as transformers does: (path, commit)."""
    from huggingface_hub import hf_hub_download

    warn_if_unreachable()
    try:
        file = Path(hf_hub_download(repo, filename, revision=revision))
    except Exception as error:  # offline, unknown repo or file, gated, ...
        raise ModelLoadError(hub_problem(f"{repo}/{filename}", error, filename)) from None
    snapshot = file.parents[len(Path(filename).parts) - 1]  # .../snapshots/<commit>/<filename>
    return file, snapshot.name


def hub_listing(repo: str, revision: str | None = None) -> list[str]:
    """The files of a hub repo at a revision."""
    from huggingface_hub import HfApi

    try:
        return HfApi().list_repo_files(repo, revision=revision)
    except Exception as error:
        raise ModelLoadError(hub_problem(repo, error)) from None


def hub_has_config(repo: str, revision: str | None = None) -> bool:
    """False when the hub (or, offline, its cache) says `repo` has no config.json, as the
    original SAM2 repos first released; True otherwise (other errors are reported later)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        hf_hub_download(repo, "config.json", revision=revision)
    except EntryNotFoundError:
        return False
    except Exception:
        return True
    return True


def _local(source: str, path: Path, revision: str | None, config: bool) -> Checkpoint:
    if revision is not None:
        raise ModelLoadError(f"{source}: a revision applies to hub ids, not to a local path")
    if path.is_file():
        return Checkpoint(source, {}, None, path)
    file = path / "config.json"
    if not file.is_file():
        if config:
            raise ModelLoadError(f"{source}: no config.json in this folder; not a checkpoint")
        return Checkpoint(source, {}, None, path)
    return Checkpoint(source, _read_json(file), None, path)


def _hub(source: str, revision: str | None, config: bool) -> tuple[str, dict]:
    """The commit `revision` resolves to, and config.json if asked; cached like transformers."""
    from huggingface_hub import HfApi, hf_hub_download

    warn_if_unreachable()
    try:
        if config:
            file = Path(hf_hub_download(source, "config.json", revision=revision))
            return file.parent.name, _read_json(file)  # .../snapshots/<commit>/config.json
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            file = Path(hf_hub_download(source, ".gitattributes", revision=revision))
            return file.parent.name, {}
        return HfApi().model_info(source, revision=revision).sha, {}
    except ModelLoadError:
        raise
    except Exception as error:  # offline, unknown repo, gated, bad revision, no config
        raise ModelLoadError(hub_problem(source, error)) from None


@functools.cache
def warn_if_unreachable() -> None:
    """When the hub's name does not resolve (no network, no DNS), work offline for this
    process, as HF_HUB_OFFLINE=1 does, and say so in one line: a model in the local hub
    cache still loads, and huggingface_hub's own retries (5, about 25 s, which help a flaky
    network, not an absent one) are skipped. A name that resolves changes nothing."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        go_offline()
        logging.getLogger("llmiqa").warning(
            "the hub (%s) is unreachable (its name does not resolve): working offline, from "
            "the local hub cache (set HF_HUB_OFFLINE=1 to skip this check)",
            host,
        )


def go_offline() -> None:
    """HF_HUB_OFFLINE=1 for this process and what it starts, also where huggingface_hub has
    already read the variable (transformers asks the same flag)."""
    import huggingface_hub.constants

    global _went_offline
    os.environ["HF_HUB_OFFLINE"] = "1"
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    _went_offline = True


_went_offline = False  # the hub was found unreachable (not HF_HUB_OFFLINE set by the user)


def hub_problem(source: str, error: Exception, file: str = "config.json") -> str:
    """One line saying why the hub could not provide `source`, and what to do instead."""
    name = type(error).__name__
    if _went_offline:
        why = "not in the local hub cache, and the hub is unreachable (check the network)"
    elif os.environ.get("HF_HUB_OFFLINE") == "1":
        why = "not in the local hub cache, and HF_HUB_OFFLINE=1 forbids downloading it"
    elif name in ("RepositoryNotFoundError", "GatedRepoError"):
        why = "no such model on the hub, or it is gated or private (log in with `hf auth login`)"
    elif name == "RevisionNotFoundError":
        why = "the hub has no such revision of it"
    elif name == "EntryNotFoundError" and file == "config.json":
        why = "the hub repository has no config.json: not a transformers checkpoint"
    elif name == "EntryNotFoundError":
        why = f"the hub repository has no {file}"
    elif name in ("LocalEntryNotFoundError", "ConnectionError", "Timeout", "OfflineModeIsEnabled"):
        why = "the hub cannot be reached and it is not in the local cache (check the network)"
    else:
        why = f"the hub could not provide it ({one_line(error)})"
    return (
        f"{source}: {why}; no local folder of that name exists either (give a local "
        "checkpoint folder instead; `llmiqa tiny FOLDER` or `make try` builds tiny models to "
        "try llmiqa offline)"
    )


def _read_json(file: Path) -> dict:
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{file}: unreadable JSON ({one_line(error)})") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{file}: not a JSON object")
    return data


# ---- content hashes ---------------------------------------------------------------------


def hash_cache_path() -> Path:
    """Where file hashes are cached: $LLMIQA_CACHE or ~/.cache/llmiqa, file-hashes.json."""
    root = os.environ.get("LLMIQA_CACHE") or Path.home() / ".cache" / "llmiqa"
    return Path(root) / "file-hashes.json"


def content_hash(path: Path) -> str:
    """A hash of a file, or of a folder's identity files (names and contents), 16 hex digits."""
    files = [path] if path.is_file() else _identity_files(path)
    cache = _read_cache()
    digest = hashlib.blake2b(digest_size=8)
    changed = False
    for file in files:
        stat = file.stat()
        key = str(file.resolve())
        stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]
        entry = cache.get(key)
        if not _valid(key, entry) or entry[:4] != stamp:
            entry = [*stamp, file_hash(file)]
            # A file modified within the file system's timestamp granularity may change
            # again without its mtime moving (git's "racy" case): hash it again next time.
            if time.time_ns() - stat.st_mtime_ns > _RACY_NS:
                cache[key] = [*entry, _entry_check(key, entry)]
                changed = True
        digest.update(f"{file.relative_to(path) if path.is_dir() else file.name}:".encode())
        digest.update(entry[4].encode())
    if changed:
        _write_cache(cache)
    return digest.hexdigest()


def _entry_check(key: str, entry: list) -> str:
    return hashlib.blake2b(json.dumps([key, *entry]).encode(), digest_size=8).hexdigest()


def _valid(key: str, entry: object) -> bool:
    """A cache entry of this format whose checksum holds (else: hash the file again)."""
    return (
        isinstance(entry, list)
        and len(entry) == 6
        and isinstance(entry[4], str)
        and entry[5] == _entry_check(key, entry[:5])
    )


def _identity_files(folder: Path) -> list[Path]:
    found = {file for pattern in IDENTITY_FILES for file in folder.glob(pattern)}
    return sorted(file for file in found if file.is_file())


def file_hash(file: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(file, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _read_cache() -> dict:
    try:
        data = json.loads(hash_cache_path().read_text())
    except (OSError, ValueError):
        return {}  # no cache yet, or a damaged one: hashes are recomputed
    return data if isinstance(data, dict) else {}


def _write_cache(cache: dict) -> None:
    """Atomically, and never fatally: a cache that cannot be written only costs time."""
    target = hash_cache_path()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=target.parent, delete=False) as handle:
            json.dump(cache, handle)
        os.replace(handle.name, target)
    except OSError:
        pass
