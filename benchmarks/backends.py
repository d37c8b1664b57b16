"""The same ratings through three backends: transformers, vLLM's engine, a `vllm serve`.

Real 1024x768 images from ../shared/data/dibr, each rated whole and as region crops,
through a random Qwen2-VL big enough that the forward pass dominates (tiny size "bench",
~40 M parameters, sub-images up to 448x448 px: ~800 prompt tokens each). Each backend
runs in its own process, so that its peak memory (VmHWM, summed over a server's
processes) is its own; all of them first rate a few warm-up images that are not measured.
Reports ratings per second, peak memory, the ratio to transformers and the largest
|Δp| against transformers. Needs the vLLM venv:

    .venv-vllm/bin/python benchmarks/backends.py [--images 8] [--in-flight 32]

`--families` instead rates the same requests through transformers on each family's tiny
random checkpoint (llmiqa/tiny/families.py) at batch sizes 1, 4 and 8, in this process: ratings
per second (absolute values mean little on ~0.2 M-parameter models; a family whose batch
8 is no faster than batch 1 does not batch) and the batch sizes its forward passes saw:

    .venv/bin/python benchmarks/backends.py --families [--images 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIBR = ROOT.parent / "shared" / "data" / "dibr"
BOXES = ((0.0, 0.0, 0.5, 0.5), (0.5, 0.0, 1.0, 0.5), (0.25, 0.25, 0.75, 0.75))
WARMUP = 2  # images rated first and not measured: engine warm-up, the prefix cached once
BACKENDS = ("transformers", "vllm", "server")


def requests(count: int, skip: int = 0) -> list:
    """Each image whole and its region crops, under the paper's standard (K = 7)."""
    from llmiqa.inputs.images import load_image
    from llmiqa.method.standards import Standard
    from llmiqa.raters.base import RatingRequest

    prompt = Standard().prompt()
    made = []
    for path in sorted(DIBR.glob("*.png"))[skip : skip + count]:
        image = load_image(path).image
        w, h = image.size
        views = [image] + [
            image.crop((int(a * w), int(b * h), int(c * w), int(d * h))) for a, b, c, d in BOXES
        ]
        made += [
            RatingRequest.of(view, prompt, 7, model=f"{path.name}#{i}")
            for i, view in enumerate(views)
        ]
    return made


def peak_mb(pids: list[int]) -> float:
    """Summed peak resident memory (VmHWM) of these processes, in MB."""
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
    return total / 1024


def serve(checkpoint: str, threads: str) -> tuple[subprocess.Popen, str]:
    """A `vllm serve` of the checkpoint on 127.0.0.1, once it answers."""
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", checkpoint]
    command += ["--served-model-name", "bench", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--dtype", "float32", "--enforce-eager", "--max-model-len", "4096"]
    command += ["--limit-mm-per-prompt", '{"image": 1, "video": 0}']
    environment = os.environ | {"VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": threads}
    log = open(Path(tempfile.gettempdir()) / f"llmiqa-bench-serve-{port}.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=environment, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if process.poll() is not None:
            raise SystemExit(f"vllm serve exited; see {log.name}")
        try:
            with urllib.request.urlopen(url + "/v1/models", timeout=5):
                return process, url
        except OSError:
            time.sleep(1)
    raise SystemExit(f"vllm serve did not start; see {log.name}")


def worker(backend: str, checkpoint: str, images: int, in_flight: int, out: str) -> None:
    """One backend in this process: load, warm up, rate, write timings and ratings."""
    import signal

    from llmiqa.raters.spec import RaterSpec

    server = None
    started = time.perf_counter()
    if backend == "transformers":
        spec = RaterSpec(checkpoint)
    elif backend == "vllm":
        spec = RaterSpec(checkpoint, backend="vllm", max_in_flight=in_flight)
    else:
        server, url = serve(checkpoint, str(os.cpu_count()))
        spec = RaterSpec("bench", server=url, max_in_flight=in_flight)
    rater = spec.load()
    loaded = time.perf_counter() - started
    warmup = requests(WARMUP)
    assert len(dict(rater.rate(warmup))) == len(warmup)
    measured = requests(images, skip=WARMUP)
    started = time.perf_counter()
    ratings = dict(rater.rate(measured))
    seconds = time.perf_counter() - started
    pids = [os.getpid()]
    if server is not None:
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
        pids += [server.pid, *map(int, children)]
    result = {
        "backend": backend,
        "load_s": loaded,
        "rate_s": seconds,
        "ratings": len(measured),
        "peak_mb": peak_mb(pids),
        "probs": {measured[i].key: ratings[i].probs().tolist() for i in ratings},
    }
    Path(out).write_text(json.dumps(result))
    if server is not None:
        os.killpg(server.pid, signal.SIGKILL)


def families(images: int) -> None:
    """Each family of the matrix at batch 1, 4 and 8: ratings/s and forward batch sizes."""
    from functools import partial

    from llmiqa import tiny
    from llmiqa.raters.spec import RaterSpec
    from llmiqa.tiny.matrix import BUILDERS

    build = {"qwen2_vl": tiny.build_qwen2_vl, "qwen2_5_vl": partial(tiny.build_qwen2_vl,
             version="2.5"), "llava": tiny.build_llava, **BUILDERS}  # fmt: skip
    warmup, measured = requests(1), requests(images, skip=1)
    print(f"{images} DIBR images x {1 + len(BOXES)} views; ratings/s (forward batch sizes)")
    print(f"{'family':<17}" + "".join(f"{f'batch {b}':>24}" for b in (1, 4, 8)) + f"{'8 vs 1':>8}")
    with tempfile.TemporaryDirectory() as folder:
        for key, builder in build.items():
            checkpoint = str(builder(Path(folder) / key))
            speeds, cells = [], []
            for batch in (1, 4, 8):
                rater = RaterSpec(checkpoint, batch_size=batch).load()
                sizes = []
                prepare = rater.prepare
                rater.prepare = lambda chunk, p=prepare, s=sizes: s.append(len(chunk)) or p(chunk)
                dict(rater.rate(warmup))
                sizes.clear()
                started = time.perf_counter()
                assert len(dict(rater.rate(measured))) == len(measured)
                speeds.append(len(measured) / (time.perf_counter() - started))
                cells.append(f"{speeds[-1]:.1f} ({','.join(map(str, sorted(set(sizes))))})")
            print(
                f"{key:<17}" + "".join(f"{c:>24}" for c in cells) + f"{speeds[2] / speeds[0]:>8.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=8, help="measured images (x4 views)")
    parser.add_argument("--in-flight", type=int, default=32, help="vLLM/server requests at once")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--checkpoint", help="a Qwen2-VL folder (default: a random ~40 M one)")
    parser.add_argument("--families", action="store_true", help="tiny families, batch 1/4/8")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.families:
        families(args.images)
        return
    if args.worker:
        worker(args.worker, args.checkpoint, args.images, args.in_flight, args.out)
        return
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = args.checkpoint
        if checkpoint is None:
            from llmiqa import tiny

            checkpoint = str(tiny.build_qwen2_vl(Path(folder) / "bench", size="bench"))
        results = {}
        for backend in args.backends:
            out = Path(folder) / f"{backend}.json"
            command = [sys.executable, __file__, "--worker", backend, "--checkpoint", checkpoint]
            command += ["--images", str(args.images), "--in-flight", str(args.in_flight)]
            done = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"the {backend} worker failed:\n{done.stderr[-3000:]}")
            results[backend] = json.loads(out.read_text())
    report(results, args)


def report(results: dict, args) -> None:
    import numpy as np

    base = results.get("transformers")
    print(f"{args.images} DIBR images x {1 + len(BOXES)} views, in flight {args.in_flight}")
    print(f"{'backend':<14}{'load s':>8}{'rate s':>8}{'images/s':>10}{'ratings/s':>11}", end="")
    print(f"{'peak MB':>9}{'ratio':>7}{'max |Δp|':>10}")
    for name, r in results.items():
        speed = r["ratings"] / r["rate_s"]
        ratio = speed / (base["ratings"] / base["rate_s"]) if base else float("nan")
        images = speed / (1 + len(BOXES))
        gap = float("nan")
        if base:
            gap = max(
                float(np.abs(np.subtract(p, base["probs"][k])).max()) for k, p in r["probs"].items()
            )
        print(
            f"{name:<14}{r['load_s']:>8.1f}{r['rate_s']:>8.1f}{images:>10.3f}{speed:>11.2f}", end=""
        )
        print(f"{r['peak_mb']:>9.0f}{ratio:>7.2f}{gap:>10.1e}")


if __name__ == "__main__":
    main()
