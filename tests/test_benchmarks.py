"""The GPU benchmark runs end to end at a reduced size on the CPU (tiny random models):
the script a user with a GPU runs at full size works, and reports every figure."""

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_benchmark_runs_reduced_on_the_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--reduced", "--device",
               "cpu", "--images", "2", "--batch-size", "2", "--json", str(out)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert [row["model"] for row in report["rows"]] == [
        "Qwen/Qwen2.5-VL-7B-Instruct", "Qwen/Qwen3-VL-8B-Instruct"
    ]  # fmt: skip
    for row in report["rows"]:
        for figure in ("loop_s", "whole_s", "regions_s"):
            assert math.isfinite(row[figure]) and row[figure] > 0
    assert "img/s" in done.stdout


def test_the_ceiling_benchmark_runs_reduced_and_reports_every_figure(tmp_path):
    """benchmarks/ceiling.py: llmiqa with a model that costs nothing, beside PIL's decode."""
    out = tmp_path / "ceiling.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "ceiling.py"), "--images", "2",
               "--repeats", "1", "--decoders", "1", "2", "--json", str(out)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    cells = {(row["format"], row["mode"]) for row in report["rows"]}
    assert cells == {(f, m) for f in ("jpeg", "png") for m in ("whole-only", "regions")}
    for row in report["rows"]:
        for figure in ("decode", "llmiqa", "store", "llmiqa_x", "store_x"):
            assert math.isfinite(row[figure]) and row[figure] > 0
    assert report["torch_imported"] is False  # a backend without torch never imports it
    assert set(report["scaling"]) == {"1", "2"} and "img/s" in done.stdout
