"""`llmiqa eval --ray` on a real two-node Ray cluster on 127.0.0.1: tiny random models, the
real DIBR images. Results must be byte-identical to a single-process run, and no fault (a
rating actor killed, the driver killed, a node removed) may lose or duplicate a rating;
workers that keep dying (on a job, or while they load their model) stop the run in one line.

Marked `ray` (run with `make test-ray`, which installs the llmiqa[ray] extra); the test of
the message without Ray needs no cluster and runs everywhere.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from llmiqa.cli import main
from llmiqa.errors import UsageError
from llmiqa.inputs import images
from llmiqa.runs.config import RunConfig
from llmiqa.runs.evaluate import evaluate_run
from llmiqa.scoring.presets import resolve
from llmiqa.scoring.store import Store
from llmiqa.tiny import PERMISSIVE_MASKS

WHOLE = 48  # images in the fault tests: 6 rating jobs of 8 images (batch 1 on a CPU)
REGIONS = 6  # images in the SAM2 test
CPUS = 0.5  # per actor and decode task: 2 cores hold a task and the actors of both pools


def config_for(dibr, model_dir, limit: int, **scoring) -> RunConfig:
    options = resolve({"model": [str(model_dir)], "region_mode": "whole-only", **scoring})
    return RunConfig.create(dibr, options, None, limit)


@pytest.fixture(scope="module")
def cluster():
    """A head and a second node with its own CPUs, both on this machine."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    nodes = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False}
    )
    nodes.add_node(num_cpus=2)
    # this process stays connected, so runs share worker processes (RayCluster joins an
    # initialised Ray and leaves it up); the driver-kill test starts its own driver
    ray.init(address=nodes.address, log_to_driver=False)
    yield nodes
    if ray.is_initialized():
        ray.shutdown()
    nodes.shutdown()


def on(cluster, **options):
    from llmiqa.distributed.cluster import RayOptions

    return RayOptions(address=cluster.address, cpus=CPUS, **options)


@pytest.fixture(scope="module")
def whole_config(dibr, qwen2_vl_dir) -> RunConfig:
    return config_for(dibr, qwen2_vl_dir, WHOLE)


@pytest.fixture(scope="module")
def whole_single(tmp_path_factory, whole_config) -> Path:
    """The single-process run every Ray run of `whole_config` must equal."""
    out = tmp_path_factory.mktemp("single")
    evaluate_run(whole_config, out, resamples=0)
    return out


def ratings(out: Path) -> list[tuple]:
    """Every stored rating, byte for byte."""
    with sqlite3.connect(out / "store.sqlite") as db:
        return db.execute("SELECT * FROM ratings ORDER BY key").fetchall()


def masks(out: Path) -> list[tuple]:
    with sqlite3.connect(out / "store.sqlite") as db:
        return db.execute("SELECT * FROM segmentations ORDER BY key").fetchall()


def stored(out: Path) -> int:
    """Ratings committed so far, read while the run writes (0 before the store exists)."""
    try:
        with sqlite3.connect(f"file:{out / 'store.sqlite'}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM ratings").fetchone()[0]
    except sqlite3.Error:
        return 0


def same_results(out: Path, reference: Path) -> None:
    for name in ("results.csv", "results.jsonl"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert ratings(out) == ratings(reference)


def actor_pids(cluster, title: str) -> list[int]:
    """Worker processes of THIS cluster (children of its raylets) running `title`."""
    nodes = [cluster.head_node, *cluster.worker_nodes]
    raylets = {p.process.pid for node in nodes for p in node.all_processes.get("raylet", [])}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
            parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if title.encode() in command and parent in raylets:
            found.append(int(entry))
    return found


def ledger_counts() -> dict:
    """What the newest run's ledger (a named actor) counted so far; {} before one exists."""
    import ray

    from llmiqa.distributed.cluster import LEDGER

    named = [a for a in ray.util.list_named_actors(all_namespaces=True)
             if a["name"].startswith(LEDGER)]  # fmt: skip
    if not named:
        return {}
    newest = max(named, key=lambda a: int(a["name"].rsplit("-", 1)[1]))  # ...-<time_ns>
    return ray.get(ray.get_actor(newest["name"], newest["namespace"]).counts.remote())


def until(found, what: str):
    """Poll `found()` until it returns something."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if value := found():
            return value
        time.sleep(0.02)
    raise AssertionError(f"never saw {what}")


def kill_rater(cluster) -> int:
    """SIGKILL the one rating actor as soon as it starts a job after the first, so that it
    dies in the middle of that job."""

    def second_job() -> bool:
        units = ledger_counts().get("units", {})
        return sum(unit.startswith("rating job ") for unit in units) >= 2

    until(second_job, "a second rating job")
    (pid,) = actor_pids(cluster, "MapBatches(RateWorker)")
    os.kill(pid, signal.SIGKILL)
    return pid


def kill_loading_rater() -> int:
    """SIGKILL the first rating actor while it loads its model."""

    def loading() -> list:
        pools = ledger_counts().get("loading", {})
        return [pid for pool, workers in pools.items() if pool.startswith("rate ")
                for _, pid in workers]  # fmt: skip

    (pid,) = until(loading, "a rating actor loading its model")
    os.kill(pid, signal.SIGKILL)
    return pid


def when_stored(out: Path, count: int, action) -> tuple[threading.Thread, dict]:
    """Run `action()` in a thread once `count` ratings are committed; report how many were
    committed before and right after it (both below the total: it happened mid-run)."""
    seen: dict = {}

    def watch() -> None:
        deadline = time.monotonic() + 600
        while stored(out) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        seen["before"] = stored(out)
        seen["result"] = action()
        seen["after"] = stored(out)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread, seen


# ---- identity ---------------------------------------------------------------------------


@pytest.mark.ray
def test_regions_and_ratings_on_two_nodes_equal_a_single_process_run(
    cluster, tmp_path, dibr, qwen2_vl_dir, sam2_dir
):
    masked = {k: getattr(PERMISSIVE_MASKS, k) for k in
              ("pred_iou_thresh", "stability_score_thresh", "points_per_side")}  # fmt: skip
    config = config_for(
        dibr, qwen2_vl_dir, REGIONS, region_mode="mask", segmenter=str(sam2_dir), **masked
    )
    single = evaluate_run(config, tmp_path / "single", resamples=0)
    spread = evaluate_run(config, tmp_path / "ray", resamples=0, ray=on(cluster))
    same_results(tmp_path / "ray", tmp_path / "single")
    assert masks(tmp_path / "ray") == masks(tmp_path / "single")
    assert single["usage"]["rated"] > REGIONS  # regions were rated, not only whole images
    for count in ("rated", "from_store", "segmented", "masks_from_store", "failed"):
        assert spread["usage"][count] == single["usage"][count], count
    pools = spread["usage"]["ray"]["pools"]
    assert pools["segment"]["nodes"] == 2  # SAM2 ran on both nodes
    assert pools["segment"]["units"] == REGIONS

    again = evaluate_run(config, tmp_path / "ray", resamples=0, ray=on(cluster))
    assert again["usage"]["rated"] == again["usage"]["segmented"] == 0  # nothing sent out
    assert again["usage"]["ray"]["pools"] == {}
    same_results(tmp_path / "ray", tmp_path / "single")


@pytest.mark.ray
def test_a_store_of_the_old_content_digests_is_served_on_two_nodes_with_nothing_sent_out(
    cluster, tmp_path, dibr, qwen2_vl_dir, monkeypatch
):
    """The workers compute the old digests beside the new ones for a schema-5 store."""
    config = config_for(dibr, qwen2_vl_dir, REGIONS)
    with monkeypatch.context() as before_the_change:
        before_the_change.setattr(images, "pixel_hash", images.legacy_pixel_hash)
        evaluate_run(config, tmp_path / "run", resamples=0)
    scores = (tmp_path / "run" / "results.csv").read_text()
    with sqlite3.connect(tmp_path / "run" / "store.sqlite") as db:  # as schema 5 left it
        db.execute("DROP TABLE legacy_images")
        db.execute("DROP TABLE aliases")
        db.execute("UPDATE meta SET value = '5' WHERE name = 'schema'")
    again = evaluate_run(config, tmp_path / "run", resamples=0, ray=on(cluster), overwrite=True)
    assert again["usage"]["rated"] == 0 and again["usage"]["from_store"] == REGIONS
    assert again["usage"]["ray"]["pools"] == {}  # nothing sent out
    results = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    digests = {json.loads(line)["digest"] for line in results}
    assert {row[3] for row in ratings(tmp_path / "run")} == digests  # moved to the new ones
    assert len(digests) == REGIONS and (tmp_path / "run" / "results.csv").read_text() == scores


@pytest.mark.ray
def test_a_sep_iqa_run_on_two_nodes_equals_a_single_process_run(
    cluster, tmp_path, dibr, qwen2_vl_dir
):
    """Answer words and top raw logits: the workers also send SeP-IQA's token weights,
    which the collect pass reads from the store (the driver loads no model)."""
    question = {"kind": "sepiqa", "levels": 5, "readout": "sepiqa"}
    config = config_for(dibr, qwen2_vl_dir, REGIONS, **question)
    evaluate_run(config, tmp_path / "single", resamples=0)
    evaluate_run(config, tmp_path / "ray", resamples=0, ray=on(cluster))
    same_results(tmp_path / "ray", tmp_path / "single")
    with sqlite3.connect(tmp_path / "ray" / "store.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM directions").fetchone() == (1,)


# ---- faults -----------------------------------------------------------------------------


@pytest.mark.ray
def test_a_killed_rating_actor_is_restarted_and_nothing_is_lost_or_duplicated(
    cluster, tmp_path, whole_config, whole_single
):
    out = tmp_path / "run"
    thread, seen = when_stored(out, 1, lambda: kill_rater(cluster))
    summary = evaluate_run(whole_config, out, resamples=0, ray=on(cluster, actors=1))
    thread.join(60)
    assert seen["result"] and seen["after"] < WHOLE  # killed mid-run
    pool = summary["usage"]["ray"]["pools"][f"rate {whole_config.scoring['model'][0]}"]
    assert pool["workers"] == 2 and pool["actors"] == 1  # it came back and went on
    assert summary["usage"]["rated"] == WHOLE == len(ratings(out))  # each committed once
    same_results(out, whole_single)


@pytest.mark.ray
def test_when_ray_gives_up_one_line_says_so_and_a_rerun_finishes_the_rest(
    cluster, tmp_path, whole_config, whole_single
):
    out = tmp_path / "run"
    thread, _ = when_stored(out, 1, lambda: kill_rater(cluster))  # a job dies once...
    with pytest.raises(UsageError, match=r"^Ray gave up on rating job \d of ") as error:
        evaluate_run(whole_config, out, resamples=0, ray=on(cluster, actors=1, retries=0))
    thread.join(60)  # ...and with no retries allowed, its restart stops the run
    assert "\n" not in str(error.value) and "rerun the same command" in str(error.value)
    kept = len(ratings(out))
    assert 1 <= kept < WHOLE and not (out / "results.csv").exists()
    summary = evaluate_run(whole_config, out, resamples=0)  # resumed without Ray
    assert summary["usage"]["rated"] == WHOLE - kept
    same_results(out, whole_single)


@pytest.mark.ray
def test_actors_that_keep_dying_while_they_load_stop_the_run_in_one_line(
    cluster, tmp_path, whole_config, whole_single
):
    out = tmp_path / "run"
    killer = threading.Thread(target=kill_loading_rater, daemon=True)
    killer.start()  # one death while loading, and no retries allowed: the next load gives up
    with pytest.raises(UsageError, match=r"^Ray gave up on loading .*keep dying") as error:
        evaluate_run(whole_config, out, resamples=0, ray=on(cluster, actors=1, retries=0))
    killer.join(60)
    assert "\n" not in str(error.value) and "rerun the same command" in str(error.value)
    assert ratings(out) == [] and not (out / "results.csv").exists()
    summary = evaluate_run(whole_config, out, resamples=0)  # resumed without Ray
    assert summary["usage"]["rated"] == WHOLE
    same_results(out, whole_single)


@pytest.mark.ray
def test_a_driver_killed_with_sigkill_is_resumed_with_only_what_is_missing(
    cluster, tmp_path, dibr, qwen2_vl_dir, whole_config, whole_single
):
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "llmiqa.cli", "eval", "--dataset", "csv", "--root",
        dibr["root"], "--labels", dibr["labels"], "--limit", str(WHOLE), "--model",
        str(qwen2_vl_dir), "--region-mode", "whole-only", "--bootstrap", "0", "--out",
        str(out), "--ray", cluster.address, "--ray-cpus", str(CPUS),
    ]  # fmt: skip
    driver = subprocess.Popen(command, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while stored(out) < 1:
        assert driver.poll() is None, "the driver ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    kept = len(ratings(out))
    assert 1 <= kept < WHOLE and not (out / "results.csv").exists()

    summary = evaluate_run(whole_config, out, resamples=0, ray=on(cluster))
    assert summary["usage"]["rated"] == WHOLE - kept  # only what was missing went out
    assert summary["usage"]["from_store"] == kept
    same_results(out, whole_single)


@pytest.mark.ray
def test_a_node_removed_mid_run_loses_nothing(cluster, tmp_path, whole_config, whole_single):
    (node,) = cluster.worker_nodes
    out = tmp_path / "run"
    lost = lambda: cluster.remove_node(node, allow_graceful=False) or True  # noqa: E731
    thread, seen = when_stored(out, 1, lost)  # as a machine that dies
    try:
        summary = evaluate_run(whole_config, out, resamples=0, ray=on(cluster, actors=2))
        thread.join(60)
    finally:
        cluster.add_node(num_cpus=2)  # the next test gets two nodes again
    assert seen["result"] and seen["after"] < WHOLE
    assert summary["usage"]["rated"] == WHOLE == len(ratings(out))
    same_results(out, whole_single)


# ---- without Ray, and the driver's own checks ------------------------------------------


def test_ray_without_ray_installed_says_how_to_install_it(tmp_path, dibr, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails
    code = main(["eval", "--dataset", "csv", "--root", dibr["root"], "--labels",
                 dibr["labels"], "--out", str(tmp_path), "--ray"])  # fmt: skip
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        "llmiqa: --ray needs Ray, an optional extra: pip install 'llmiqa[ray]'"
    )


def test_ray_flags_without_ray_and_ray_with_shards_are_refused(tmp_path, dibr, capsys):
    base = ["eval", "--dataset", "csv", "--root", dibr["root"], "--labels", dibr["labels"],
            "--out", str(tmp_path)]  # fmt: skip
    assert main([*base, "--gpus-per-rater", "1"]) == 2
    assert "--gpus-per-rater needs --ray" in capsys.readouterr().err
    assert main([*base, "--ray", "--shard", "0/2"]) == 2
    assert "--ray and --shard do not go together" in capsys.readouterr().err


def test_an_image_only_the_driver_can_read_stops_the_run_clearly(data_dir):
    from llmiqa.distributed.cluster import check_unreadable_here
    from llmiqa.distributed.plan import Decoded

    path = str(sorted((data_dir / "dibr").glob("*.png"))[0])
    seen_by_worker = Decoded(path, error=f"{path}: no such file", node="10.0.0.7")
    with pytest.raises(UsageError, match=r"no such file on Ray node 10\.0\.0\.7, but this machine"):
        check_unreadable_here(seen_by_worker)
    check_unreadable_here(Decoded("/nowhere.png", error="/nowhere.png: no such file"))


def test_the_collect_pass_never_decodes_what_only_workers_decoded():
    from llmiqa.distributed.plan import Undecoded

    image = Undecoded("a.png", 4, 3)
    assert image.size == (4, 3) and (image.width, image.height) == (4, 3)
    with pytest.raises(UsageError, match=r"a\.png: its pixels were needed after the Ray phases"):
        image.crop((0, 0, 1, 1))


def test_the_store_says_which_images_are_segmented_without_unpacking_masks(tmp_path):
    store = Store(tmp_path / "store.sqlite")
    store.put_masks("a", "sam2|x", (2, 3), [np.ones((2, 3), dtype=bool)])
    store.put_masks("b", "sam2|y", (2, 3), [])
    assert store.segmented(["a", "b", "c"], "sam2|x") == {"a"}
    assert store.segmented([f"n{i}" for i in range(1200)] + ["b"], "sam2|y") == {"b"}
