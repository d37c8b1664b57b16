"""`llmiqa score INPUTS --out DIR --ray` on a real two-node Ray cluster on this machine, with
the digest rater (no model; registered on every worker by a Ray setup hook): the same
Parquet rows and stored ratings as the single-process run, and the same after a killed
worker, a lost node or a killed driver, each input once; a shard that kills its worker
repeatedly is given up in one line, the rest kept. Marked `ray` (`make test-ray`); the
command-line checks and the worker store's lookups need no cluster.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from llmiqa.cli import main
from llmiqa.raters import registry

ROOT = Path(__file__).resolve().parents[2]
RATER = ROOT / "tests" / "runs"
sys.path.insert(0, str(RATER))
import digest_rater  # noqa: E402

SHARDS, PER_SHARD = 6, 4  # tar shards, images in each
INPUTS = SHARDS * PER_SHARD
CPUS = 0.5  # per actor: two cores hold both nodes' actors
DELAY = "0.1"  # seconds per rating on the workers: a run lasts long enough to hurt it
FLAGS = ["--backend", "digest", "--model", "m", "--region-mode", "whole-only"]


@pytest.fixture(autouse=True)
def digest(monkeypatch):
    monkeypatch.setattr(registry, "_BACKENDS", dict(registry._BACKENDS))  # undone after
    digest_rater.register()


@pytest.fixture(scope="module")
def poison_file(tmp_path_factory) -> Path:
    """Digests written here kill the worker rating them (empty: nothing does)."""
    return tmp_path_factory.mktemp("poison") / "digests.txt"


def runtime_env(poison_file: Path) -> dict:
    """What every worker of these tests runs with: llmiqa and the digest rater importable
    and registered, slow enough ratings, the poison file."""
    return {
        "env_vars": {"PYTHONPATH": f"{ROOT}:{RATER}", "LLMIQA_TEST_DELAY": DELAY,
                     "LLMIQA_TEST_CRASH": str(poison_file), "HF_HUB_OFFLINE": "1"},
        "worker_process_setup_hook": "digest_rater.register",
    }  # fmt: skip


@pytest.fixture(scope="module")
def cluster(poison_file):
    """A head and a second node, both on this machine; this process is connected, so
    `score --ray` joins it as it is."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    nodes = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    nodes.add_node(num_cpus=1)
    ray.init(address=nodes.address, log_to_driver=False, runtime_env=runtime_env(poison_file))
    yield nodes
    if ray.is_initialized():
        ray.shutdown()
    nodes.shutdown()


def crops(real_images, count: int) -> list[Image.Image]:
    photos = [Image.open(p).convert("RGB") for p in real_images]
    return [photos[n % len(photos)].crop((8 * n, 0, 8 * n + 64, 64)) for n in range(count)]


@pytest.fixture(scope="module")
def shards(tmp_path_factory, real_images) -> Path:
    """SHARDS tar files of PER_SHARD distinct real crops each."""
    root = tmp_path_factory.mktemp("shards")
    images = crops(real_images, INPUTS)
    for s in range(SHARDS):
        with tarfile.open(root / f"{s:03d}.tar", "w") as archive:
            for n in range(s * PER_SHARD, (s + 1) * PER_SHARD):
                file = root / f"{n:04d}.png"
                images[n].save(file)
                archive.add(file, arcname=f"{n:04d}.png")
                file.unlink()
    return root


@pytest.fixture(scope="module")
def single(tmp_path_factory, shards) -> Path:
    """The single-process run every Ray run must equal."""
    registry.register(digest_rater.DigestRater) if "digest" not in registry.names() else None
    out = tmp_path_factory.mktemp("single")
    assert main(["score", str(shards), "--out", str(out), *FLAGS]) == 0
    return out


def rows(out: Path) -> str:
    return json.dumps(pq.read_table(out / "results.parquet").to_pylist())


def ratings(out: Path) -> list[tuple]:
    with sqlite3.connect(out / "store.sqlite") as db:
        return db.execute("SELECT * FROM ratings ORDER BY key").fetchall()


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def same_run(out: Path, single: Path) -> None:
    """The same rows, each input once, and the same ratings in the run's store."""
    assert rows(out) == rows(single)
    ids = pq.read_table(out / "results.parquet").column("id").to_pylist()
    assert len(ids) == len(set(ids)) == INPUTS
    assert ratings(out) == ratings(single)
    assert not list((out / "stores").glob("*.sqlite"))  # every worker store merged


def score_on(cluster, shards: Path, out: Path, *more: str) -> int:
    command = ["score", str(shards), "--out", str(out), *FLAGS, "--ray", cluster.address]
    return main([*command, "--ray-cpus", str(CPUS), *more])


def parts(out: Path) -> int:
    return len(list((out / "parts").glob("*/*.parquet")))


def workers(cluster) -> list[int]:
    """The ShardWorker processes of THIS cluster (children of its raylets)."""
    nodes = [cluster.head_node, *cluster.worker_nodes]
    raylets = {p.process.pid for node in nodes for p in node.all_processes.get("raylet", [])}
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
            parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if b"ShardWorker" in command and parent in raylets:
            found.append(int(entry))
    return found


def when(condition, action) -> tuple[threading.Thread, dict]:
    """Run `action()` in a thread once `condition()` holds."""
    seen: dict = {}

    def watch() -> None:
        deadline = time.monotonic() + 300
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.02)
        seen["result"] = action()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread, seen


# ---- identity ---------------------------------------------------------------------------


@pytest.mark.ray
def test_score_on_two_nodes_writes_the_rows_of_a_single_process_run(
    cluster, shards, single, tmp_path, capsys
):
    out = tmp_path / "run"
    assert score_on(cluster, shards, out) == 0
    same_run(out, single)
    ray = summary(out)["usage"]["ray"]
    assert ray["nodes"] == 2 and ray["shards_sent"] == SHARDS  # both nodes scored shards
    assert ray["merged"]["ratings"] == INPUTS
    assert summary(out)["usage"]["rated"] == INPUTS  # counted by the workers, once each
    assert summary(out)["scores"] == summary(single)["scores"]

    assert score_on(cluster, shards, out) == 0  # a rerun sends nothing out
    assert summary(out)["usage"]["ray"]["shards_sent"] == 0
    assert summary(out)["shards_reused"] == SHARDS
    same_run(out, single)
    capsys.readouterr()


# ---- faults -----------------------------------------------------------------------------


@pytest.mark.ray
def test_a_killed_worker_is_restarted_and_each_input_is_scored_once(
    cluster, shards, single, tmp_path
):
    out = tmp_path / "run"
    thread, seen = when(lambda: parts(out) >= 1, lambda: [os.kill(workers(cluster)[0],
                                                                   signal.SIGKILL)])  # fmt: skip
    assert score_on(cluster, shards, out, "--ray-actors", "1") == 0
    thread.join(60)
    assert seen["result"]  # killed mid-run (after a part, before the last)
    same_run(out, single)


@pytest.mark.ray
def test_a_node_lost_mid_run_loses_no_input(cluster, shards, single, tmp_path):
    out = tmp_path / "run"
    (node,) = cluster.worker_nodes
    lost = lambda: cluster.remove_node(node, allow_graceful=False) or True  # noqa: E731
    thread, seen = when(lambda: parts(out) >= 1, lost)
    try:
        assert score_on(cluster, shards, out, "--ray-actors", "2") == 0
        thread.join(60)
    finally:
        cluster.add_node(num_cpus=1)  # the next test gets two nodes again
    assert seen["result"]
    same_run(out, single)


@pytest.mark.ray
def test_a_killed_driver_is_resumed_computing_nothing_twice(
    cluster, shards, single, tmp_path, poison_file
):
    out = tmp_path / "run"
    script = (
        "import sys, ray; sys.path.insert(0, sys.argv[1]); import digest_rater;"
        "digest_rater.register(); ray.init(address=sys.argv[2], log_to_driver=False,"
        "runtime_env=__import__('json').loads(sys.argv[3])); from llmiqa.cli import main;"
        "sys.exit(main(sys.argv[4:]))"
    )
    slow = runtime_env(poison_file)  # 2 s a shard: the kill lands well before the end
    slow["env_vars"]["LLMIQA_TEST_DELAY"] = "0.5"
    command = [sys.executable, "-c", script, str(RATER), cluster.address, json.dumps(slow),
               "score", str(shards), "--out", str(out), *FLAGS, "--ray", cluster.address,
               "--ray-cpus", str(CPUS)]  # fmt: skip
    driver = subprocess.Popen(command, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while parts(out) < 1:
        assert driver.poll() is None, "the driver ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    deadline = time.monotonic() + 120
    while workers(cluster) and time.monotonic() < deadline:  # Ray ends the driver's workers
        time.sleep(0.1)
    assert not workers(cluster)  # nothing writes parts or ratings from here on
    kept = parts(out)
    assert 1 <= kept < SHARDS and not (out / "results.parquet").exists()

    done = set()  # ratings the killed run committed, in the run's store or its workers'
    for file in [out / "store.sqlite", *(out / "stores").glob("*.sqlite")]:
        with sqlite3.connect(file) as db:
            done |= {key for (key,) in db.execute("SELECT key FROM ratings")}
    assert score_on(cluster, shards, out) == 0
    resumed = summary(out)
    assert resumed["usage"]["ray"]["shards_sent"] == SHARDS - kept
    assert resumed["usage"]["rated"] == INPUTS - len(done)  # nothing rated twice
    same_run(out, single)


@pytest.mark.ray
def test_a_shard_that_kills_its_worker_is_given_up_in_one_line_and_the_rest_kept(
    cluster, shards, single, tmp_path, poison_file, real_images, capsys
):
    from llmiqa.inputs.images import from_pil

    poison = crops(real_images, INPUTS)[PER_SHARD]  # the first image of shard 001.tar
    poison_file.write_text(from_pil(poison, "poison").digest)
    out = tmp_path / "run"
    try:
        code = score_on(cluster, shards, out, "--ray-retries", "1", "--ray-actors", "2")  # 2 deaths
    finally:
        poison_file.unlink()
    err = capsys.readouterr().err
    assert code == 1
    (line,) = [line for line in err.splitlines() if "Ray gave up" in line]
    assert line == (
        f"error: Ray gave up on shard {shards / '001.tar'}: its worker died 2 times on it; "
        "rerun to try it again"
    )
    given_up = summary(out)
    assert given_up["inputs"] == INPUTS - PER_SHARD
    assert given_up["damaged_shards"] == [{"shard": str(shards / "001.tar"),
                                           "problem": line.removeprefix("error: ")}]  # fmt: skip
    kept = pq.read_table(out / "results.parquet").column("shard").to_pylist()
    assert len(kept) == INPUTS - PER_SHARD and all("001" not in key for key in kept)

    assert score_on(cluster, shards, out) == 0  # the poison gone, the rerun finishes it
    assert summary(out)["usage"]["ray"]["shards_sent"] == 1
    same_run(out, single)


@pytest.mark.ray
def test_a_pool_the_cluster_cannot_hold_is_refused_before_any_work(
    cluster, shards, tmp_path, capsys
):
    """Two nodes of 1 CPU hold 4 actors of 0.5 CPU and none that needs a GPU: the rest
    would wait for resources forever."""
    for more, held in ((["--ray-actors", "6"], "4 of the 6"), (["--gpus-per-rater", "1"],
                                                              "0 of the 1")):  # fmt: skip
        assert score_on(cluster, shards, tmp_path / "run", *more) == 2
        err = capsys.readouterr().err
        assert f"the Ray cluster's nodes can hold {held} actors asked for" in err
        assert err.count("\n") == 1 and not parts(tmp_path / "run")


# ---- without a cluster ------------------------------------------------------------------


def test_ray_without_out_and_ray_flags_without_ray_are_refused(tmp_path, capsys):
    image = str(tmp_path / "a.png")
    Image.new("RGB", (8, 8)).save(image)
    assert main(["score", image, *FLAGS, "--ray"]) == 2
    assert capsys.readouterr().err.strip() == (
        "llmiqa: --ray goes with --out (a run folder the workers write)"
    )
    assert main(["score", image, "--out", str(tmp_path / "out"), *FLAGS, "--ray-actors", "2"]) == 2
    assert capsys.readouterr().err.strip() == "llmiqa: --ray-actors needs --ray"


def test_a_worker_store_reads_through_to_the_run_store_and_writes_only_its_own(tmp_path, rating):
    from llmiqa.distributed.shards import WorkerStore
    from llmiqa.method.regions import View
    from llmiqa.method.standards import IMAGE, Prompt
    from llmiqa.raters.base import RatingRequest
    from llmiqa.scoring.store import Store

    def request(n: int) -> RatingRequest:
        prompt = Prompt("standard", f"{IMAGE} score it")
        return RatingRequest(model="m", image=f"i{n}", size=(4, 4), view=View(), prompt=prompt,
                             levels=4)  # fmt: skip

    run = Store(tmp_path / "store.sqlite")
    run.put_rating(request(0), rating([0.1, 0.2, 0.3, 0.4]))
    run.put_masks("i0", "sam", (2, 2), [])
    run.checkpoint()
    worker = WorkerStore(tmp_path / "stores" / "w.sqlite", tmp_path / "store.sqlite")
    worker.put_rating(request(1), rating([0.4, 0.3, 0.2, 0.1]))
    found, refused = worker.ratings([request(0), request(1), request(2)])
    assert sorted(found) == [request(0).key, request(1).key] and refused == []
    assert worker.segmented(["i0", "i1"], "sam") == {"i0"}
    assert worker.masks("i0", "sam") == ([], None)
    assert Store(tmp_path / "store.sqlite").counts()["ratings"] == 1  # the run's: untouched
    assert run.merge(tmp_path / "stores" / "w.sqlite")["ratings"] == 1
    assert sorted(run.ratings([request(0), request(1)])[0]) == sorted(found)
