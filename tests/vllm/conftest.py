"""Fixtures for the vLLM tests (run in their own venv: `make test-vllm`).

One tiny random Qwen2-VL with head sizes vLLM's CPU attention supports, the same rating
requests for every backend (real images and region crops from ../shared/data), the
transformers rater's ratings of them as the reference, and a real `vllm serve` on
127.0.0.1, started as soon as the checkpoint exists so that it boots while the engine
tests run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from llmiqa import tiny
from llmiqa.inputs.images import load_image
from llmiqa.method.standards import Standard
from llmiqa.raters.base import RatingRequest

SERVED_NAME = "tiny-qwen"
# |Δp| between two backends run on the same machine (no golden file): their float32 kernels
# differ by rounding, seen at most 1.1e-7 (engine) and 9.8e-7 (vllm serve) on 2-core x86
# CPUs; the bound is 100x that.
TOLERANCE = 1e-4
# Region boxes as fractions of the image (left, top, right, bottom): a centre crop and a
# corner crop, as Algorithm 1's regions are bounding boxes of the original image.
BOXES = ((0.25, 0.25, 0.75, 0.75), (0.0, 0.5, 0.4, 1.0))


def cases(images: list[Path]) -> list[dict]:
    """Plain-data rating cases: each image whole (paper standard, K = 7, and the number
    standard, K = 5) and its region crops (the released code's region prompt)."""
    found = []
    for path in images:
        for standard in (("word", 7, "paper"), ("number", 5, "paper")):
            found.append({"path": str(path), "box": None, "standard": standard, "view": "whole"})
        for box in BOXES:
            standard = ("word", 7, "dogiqa")
            found.append({"path": str(path), "box": box, "standard": standard, "view": "region"})
    for index, case in enumerate(found):
        case["key"] = f"case-{index}"
    return found


def make_request(case: dict) -> RatingRequest:
    image = load_image(case["path"]).image
    if case["box"] is not None:
        left, top, right, bottom = case["box"]
        w, h = image.size
        image = image.crop((int(left * w), int(top * h), int(right * w), int(bottom * h)))
    standard = Standard(*case["standard"])
    prompt = standard.prompt(case["view"])
    return RatingRequest.of(image, prompt, standard.levels, model=case["key"])  # a unique key


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Canaries and file hashes of this session stay in a temporary folder."""
    os.environ["LLMIQA_CACHE"] = str(tmp_path_factory.mktemp("llmiqa-cache"))


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    return tiny.build_qwen2_vl(tmp_path_factory.mktemp("qwen2-vl-vllm"), size="vllm")


@pytest.fixture(scope="session")
def rating_cases(real_images) -> list[dict]:
    assert len(real_images) >= 8
    return cases(real_images[:8])


@pytest.fixture(scope="session")
def requests(rating_cases) -> list[RatingRequest]:
    return [make_request(case) for case in rating_cases]


@pytest.fixture(scope="session")
def reference(checkpoint, requests) -> dict:
    """The transformers rater's ratings: what every other backend must agree with."""
    from llmiqa.raters.spec import RaterSpec

    ratings = dict(RaterSpec(str(checkpoint)).load().rate(requests))
    assert len(ratings) == len(requests)
    return {requests[i].key: rating for i, rating in ratings.items()}


class Served:
    """A `vllm serve` subprocess (its own process group) and its log."""

    def __init__(self, checkpoint: Path, log: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        environment = os.environ | {
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "OMP_NUM_THREADS": "1",  # leave the other core to the in-process engine tests
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # with "uni": no separate worker process
        }
        command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
        command += ["--model", str(checkpoint), "--served-model-name", SERVED_NAME]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--dtype", "float32"]
        command += ["--enforce-eager", "--max-model-len", "4096", "--seed", "0"]
        command += ["--distributed-executor-backend", "uni"]
        command += ["--limit-mm-per-prompt", json.dumps({"image": 1, "video": 0})]
        with open(log, "wb") as output:
            self.process = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, env=environment,
                start_new_session=True,
            )  # fmt: skip

    def ready(self, timeout: float = 420.0) -> str:
        """The server's URL once it answers /v1/models."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"vllm serve exited: {self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/v1/models", timeout=5):
                    return self.url
            except OSError:
                time.sleep(1.0)
        pytest.fail(f"vllm serve did not answer within {timeout:g} s: {self.tail()}")

    def kill(self) -> None:
        """SIGKILL to the whole group: the API server and its engine process."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture(scope="session", autouse=True)
def servers(request, checkpoint, tmp_path_factory):
    """Two servers of the checkpoint, started before any vLLM test runs so that they boot
    (about a minute of imports each) while the engine tests run; the second one stands in
    for the restart after the first is killed. Tests that need one call `.ready()`."""
    if not any("vllm_server" in item.fixturenames for item in request.session.items):
        yield []  # no server test selected
        return
    started = [Served(checkpoint, tmp_path_factory.mktemp("serve") / "serve.log") for _ in "ab"]
    yield started
    for served in started:
        served.kill()


@pytest.fixture(scope="session")
def vllm_server(servers) -> Served:
    return servers[0]


@pytest.fixture(scope="session")
def restarted_server(servers) -> Served:
    return servers[1]
