"""A real `vllm serve` on 127.0.0.1 through the server rater: agreement with transformers,
a client killed with SIGKILL, a server killed mid-run."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("vllm")

from llmiqa.raters import server as server_module
from llmiqa.raters.base import ModelLoadError
from llmiqa.raters.spec import RaterSpec

TOLERANCE = 1e-4  # see tests/vllm/conftest.py
SERVED_NAME = "tiny-qwen"

# A client as a user's run is one: it rates what the store lacks and commits each rating
# as it arrives. argv: conftest path, server URL, store path, cases as JSON.
CLIENT = """
import importlib.util, json, sqlite3, sys
spec = importlib.util.spec_from_file_location("cases", sys.argv[1])
cases = importlib.util.module_from_spec(spec); spec.loader.exec_module(cases)
from llmiqa.raters.spec import RaterSpec
store = sqlite3.connect(sys.argv[3])
store.execute("CREATE TABLE IF NOT EXISTS ratings (key TEXT PRIMARY KEY, value TEXT)")
done = {row[0] for row in store.execute("SELECT key FROM ratings")}
todo = [c for c in json.loads(sys.argv[4]) if c["key"] not in done]
requests = [cases.make_request(c) for c in todo]
print("sending", len(requests), flush=True)
rater = RaterSpec("tiny-qwen", server=sys.argv[2], max_in_flight=1).load()
for index, rating in rater.rate(requests):
    value = json.dumps([rating.logprobs.tolist(), rating.other_logprob, rating.other_value])
    store.execute("INSERT INTO ratings VALUES (?, ?)", (todo[index]["key"], value))
    store.commit()
    print("committed", todo[index]["key"], flush=True)
"""


def agreement(ratings: dict, reference: dict) -> float:
    """Largest |Δ| between two sets of ratings over p, the log-probs and the other token."""
    worst = 0.0
    for key, rating in ratings.items():
        expected = reference[key]
        assert not rating.incomplete and rating.other_value == expected.other_value
        worst = max(
            worst,
            np.abs(rating.probs() - expected.probs()).max(),
            np.abs(rating.logprobs - expected.logprobs).max(),
            abs(rating.other_logprob - expected.other_logprob),
        )
    return worst


@pytest.fixture(autouse=True)
def fresh_identification(monkeypatch):
    server_module.identified.cache_clear()


def test_the_server_agrees_with_transformers_on_real_images_and_crops(
    vllm_server, checkpoint, requests, reference
):
    spec = RaterSpec(SERVED_NAME, server=vllm_server.ready(), max_in_flight=8)
    assert spec.identity == f"server:{SERVED_NAME}|root={checkpoint}"
    rater = spec.load()
    assert rater.server.mode == "vllm"  # exact digits through vLLM's extra parameters
    ratings = {requests[i].key: r for i, r in rater.rate(requests)}
    assert len(ratings) == len(requests)
    worst = agreement(ratings, reference)
    print(f"vllm serve vs transformers, max |Δ|: {worst:.3g}")
    assert worst < TOLERANCE


def test_a_client_killed_with_sigkill_loses_nothing_committed(
    vllm_server, rating_cases, requests, reference, tmp_path
):
    store = tmp_path / "store.sqlite"
    conftest = str(Path(__file__).with_name("conftest.py"))
    command = [sys.executable, "-c", CLIENT, conftest, vllm_server.ready(), str(store)]
    command.append(json.dumps(rating_cases))
    client = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    committed = 0
    for line in client.stdout:
        committed += line.startswith("committed")
        if committed == 5:
            client.send_signal(signal.SIGKILL)
            break
    client.wait()
    with sqlite3.connect(store) as db:
        kept = db.execute("SELECT count(*) FROM ratings").fetchone()[0]
    assert 5 <= kept < len(rating_cases)

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert rerun.stdout.splitlines()[0] == f"sending {len(rating_cases) - kept}"
    with sqlite3.connect(store) as db:
        rows = dict(db.execute("SELECT key, value FROM ratings"))
    assert sorted(rows) == sorted(case["key"] for case in rating_cases)
    request_of = {case["key"]: r.key for case, r in zip(rating_cases, requests, strict=True)}
    for key, value in rows.items():
        logprobs, other, _ = json.loads(value)
        expected = reference[request_of[key]]
        assert np.abs(np.asarray(logprobs) - expected.logprobs).max() < TOLERANCE
        assert abs(other - expected.other_logprob) < TOLERANCE


def test_a_server_killed_mid_run_stops_in_one_line_and_a_rerun_completes(
    vllm_server, restarted_server, requests, reference, monkeypatch
):
    monkeypatch.setenv("LLMIQA_HTTP_RETRIES", "2")
    spec = RaterSpec(SERVED_NAME, server=vllm_server.ready(), max_in_flight=2)
    identity = spec.identity
    store: dict = {}
    with pytest.raises(ModelLoadError) as caught:
        for index, rating in spec.load().rate(requests):
            store[requests[index].key] = rating
            if len(store) == 4:
                vllm_server.kill()
    message = str(caught.value)
    assert "stopped answering" in message and "run again" in message and "\n" not in message
    assert 4 <= len(store) < len(requests)

    # The same checkpoint served again (booted beforehand, on another port).
    server_module.identified.cache_clear()
    again = RaterSpec(SERVED_NAME, server=restarted_server.ready(), max_in_flight=8)
    assert again.identity == identity  # same model: the canary matches, ratings join
    missing = [r for r in requests if r.key not in store]
    for index, rating in again.load().rate(missing):
        store[missing[index].key] = rating
    assert len(store) == len(requests)
    assert agreement(store, reference) < TOLERANCE
