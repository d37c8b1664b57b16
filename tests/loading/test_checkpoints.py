"""Finding checkpoints and naming them: local paths by content, hub ids by commit."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from llmiqa.errors import ModelLoadError
from llmiqa.loading import checkpoints
from llmiqa.loading.checkpoints import content_hash, hash_cache_path, resolve


@pytest.fixture
def model(tmp_path, qwen2_vl_dir):
    return shutil.copytree(qwen2_vl_dir, tmp_path / "models" / "mine")


def test_an_existing_relative_folder_is_a_folder_not_a_hub_id(model, monkeypatch):
    monkeypatch.chdir(model.parent.parent)
    checkpoint = resolve("models/mine")
    assert checkpoint.path == model and checkpoint.commit is None
    assert checkpoint.config["model_type"] == "qwen2_vl"
    assert checkpoint.identity.startswith(f"{model}#")


def test_a_missing_relative_folder_names_both_readings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError) as error:
        resolve("models/gone")
    message = str(error.value)
    assert message.startswith("models/gone: ")
    assert "HF_HUB_OFFLINE=1" in message and "no local folder of that name" in message
    assert "connection" not in message  # offline on purpose: no network advice


def test_paths_that_cannot_be_hub_ids_are_said_to_be_missing(tmp_path):
    with pytest.raises(ModelLoadError, match="no such file or folder"):
        resolve(str(tmp_path / "nothing" / "here"))
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        resolve(str(tmp_path))
    with pytest.raises(ModelLoadError, match="revision applies to hub ids"):
        resolve(str(tmp_path), "main")


def test_weights_rewritten_in_place_at_the_same_size_change_the_identity(model):
    before = resolve(str(model)).identity
    weights = model / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-8:] = bytes(8 - len(data[-8:])) + bytes(b ^ 0xFF for b in data[-8:])[:8]
    stat = weights.stat()
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert weights.stat().st_size == stat.st_size
    assert resolve(str(model)).identity != before


def age(folder) -> None:
    """Make every file older than the file system's timestamp granularity (cacheable)."""
    for file in folder.iterdir():
        os.utime(file, ns=(file.stat().st_atime_ns, file.stat().st_mtime_ns - 10**10))


def test_an_untouched_checkpoint_is_hashed_once(model, monkeypatch):
    age(model)
    first = content_hash(model)
    assert str((model / "model.safetensors").resolve()) in hash_cache_path().read_text()
    read = []
    monkeypatch.setattr(checkpoints, "file_hash", lambda file: read.append(file) or "x")
    assert content_hash(model) == first and read == []  # what makes a 15 GB model cheap


def test_weights_rewritten_with_size_and_mtime_restored_get_a_new_identity(model):
    """`cp -p`, `rsync -t` and `tar x` set the mtime back; the inode change time moves."""
    age(model)
    before = content_hash(model)
    weights = model / "model.safetensors"
    stat = weights.stat()
    time.sleep(0.01)  # ctime has nanoseconds, but the clock tick may be coarser
    weights.write_bytes(weights.read_bytes()[::-1])
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (weights.stat().st_size, weights.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    assert content_hash(model) != before


def test_a_damaged_cache_entry_is_hashed_again_not_trusted(model):
    age(model)
    before = content_hash(model)
    cache = json.loads(hash_cache_path().read_text())
    key = str((model / "model.safetensors").resolve())
    cache[key][4] = "0" * 32  # a plausible hash: the entry's checksum no longer holds
    hash_cache_path().write_text(json.dumps(cache))
    assert content_hash(model) == before
    assert json.loads(hash_cache_path().read_text())[key][4] != "0" * 32  # rewritten


def test_a_single_file_checkpoint_is_named_by_its_content(tmp_path):
    file = tmp_path / "sam2_hiera_tiny.pt"
    file.write_bytes(b"weights")
    checkpoint = resolve(str(file), config=False)
    assert checkpoint.path == file and checkpoint.config == {}
    before = checkpoint.identity
    file.write_bytes(b"WEIGHTS")
    assert checkpoint.identity == before  # fixed when first computed
    assert resolve(str(file), config=False).identity != before


def test_with_no_network_the_hub_is_given_up_at_once_and_a_cached_model_still_loads(tmp_path):
    """No name resolves here for hub.invalid (as huggingface.co on a machine without a
    network): one probe, then offline for the process. A model in the local hub cache
    resolves to its commit; one that is not fails, both in well under huggingface_hub's
    25 s of retries."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    cached = tmp_path / "hf" / "hub" / "models--someone--cached"
    (cached / "refs").mkdir(parents=True)
    (cached / "refs" / "main").write_text(commit)
    (cached / "snapshots" / commit).mkdir(parents=True)
    (cached / "snapshots" / commit / "config.json").write_text('{"model_type": "qwen2_vl"}')
    child = (
        "import time\n"
        "from llmiqa.errors import ModelLoadError\n"
        "from llmiqa.loading.checkpoints import resolve\n"
        "started = time.monotonic()\n"
        "print(resolve('someone/cached').commit)\n"
        "try:\n    resolve('someone/elsewhere')\n"
        "except ModelLoadError as error:\n    print(error)\n"
        "print(time.monotonic() - started)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env |= {"HF_ENDPOINT": "https://hub.invalid", "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                          env=env, timeout=120)  # fmt: skip
    found, refused, seconds = done.stdout.strip().splitlines()
    assert found == commit
    assert refused.startswith("someone/elsewhere: not in the local hub cache, and the hub is "
                              "unreachable")  # fmt: skip
    assert float(seconds) < 2
    assert "working offline, from the local hub cache" in done.stderr
