"""Real-size speed on a GPU, without downloading weights: speed does not depend on them.

Random-weight models at the published sizes (real_configs.py) of Qwen2.5-VL-7B and
Qwen3-VL-8B in bf16, and SAM2.1 hiera-large, saved and loaded by path through llmiqa as
real checkpoints are; their processors are the real families' with the real image sizes
(Qwen-VL: up to 12.8 MP, 28 or 32 px per visual token), with llmiqa's byte-level tokenizer
(the only stand-in: prompts are ~4x more tokens than a real tokenizer makes, so the text
side is overstated). Reported for each model, on real 1024x768 photos (DIBR):
- the loop a user writes: one image per `generate(max_new_tokens=1)`, the released code's way;
- llmiqa, batched (--batch-size), whole image only;
- llmiqa with SAM2 regions (thresholds at 0, so a random SAM2 yields regions to rate);
as images/s and peak GPU memory.

    python benchmarks/gpu.py                       # full size, on cuda
    python benchmarks/gpu.py --reduced --device cpu --images 2   # tiny, to check the script

`--reduced` uses the tiny random checkpoints instead (tests/test_benchmarks.py runs it).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from llmiqa import tiny
from llmiqa.inputs.images import load_image
from llmiqa.loading.runtime import Runtime
from llmiqa.method.regions import RegionSettings
from llmiqa.method.standards import Standard
from llmiqa.raters.hf import render_chat
from llmiqa.scoring.pipeline import Scorer
from llmiqa.segmenters.masks import MaskSettings
from llmiqa.tiny.matrix import build_qwen3_vl

DIBR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dibr"
MODELS = {  # name: (real config, tiny builder, image processor sizes of the real one)
    "Qwen/Qwen2.5-VL-7B-Instruct": (lambda f: tiny.build_qwen2_vl(f, version="2.5"), 28),
    "Qwen/Qwen3-VL-8B-Instruct": (build_qwen3_vl, 32),
}
# Every candidate kept (a random SAM2 passes no real threshold), at SAM2's default 32 x 32
# prompts: the segmenter does its full work.
MASKS = MaskSettings(pred_iou_thresh=0.0, stability_score_thresh=0.0)


def real_size(name: str, folder: Path, device: str) -> Path:
    """The family's tiny checkpoint grown to the real size: real config numbers, the tiny
    one's token ids, the real image processor limits; random bf16 weights."""
    import sys

    from transformers import AutoConfig, AutoProcessor

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from real_configs import build

    builder, pixels_per_token = MODELS[name]
    small = builder(folder / "tiny")
    tokens = AutoConfig.from_pretrained(small)
    model = build(name, device=device, dtype=torch.bfloat16)
    for key in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
        setattr(model.config, key, getattr(tokens, key))
    model.save_pretrained(folder / "real")
    processor = AutoProcessor.from_pretrained(small)
    processor.image_processor.size = {
        "shortest_edge": 4 * pixels_per_token**2,
        "longest_edge": 16384 * pixels_per_token**2,
    }
    processor.save_pretrained(folder / "real")
    return folder / "real"


def sam2_large(folder: Path, device: str) -> Path:
    import sys

    from transformers import Sam2Config, Sam2ImageProcessor, Sam2Model, Sam2Processor

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from real_configs import SAM2_LARGE

    with torch.device(device):
        model = Sam2Model(Sam2Config(**SAM2_LARGE)).eval()
    model.save_pretrained(folder)
    Sam2Processor(image_processor=Sam2ImageProcessor()).save_pretrained(folder)
    return folder


def user_loop(checkpoint: Path, photos: list[Path], device: str) -> float:
    """Seconds per image: one generate(max_new_tokens=1) per image, as the released code."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(checkpoint)
    model = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype="auto").to(device)
    text = render_chat(processor, Standard().prompt())
    started = None
    for index, photo in enumerate(photos):
        if index == 1:  # the first image warms up
            synchronize(device)
            started = time.perf_counter()
        inputs = processor(text=[text], images=[[load_image(photo).image]], return_tensors="pt")
        model.generate(**inputs.to(device), max_new_tokens=1, do_sample=False)
    synchronize(device)
    del model
    return (time.perf_counter() - started) / (len(photos) - 1)


def llmiqa(checkpoint: Path, segmenter: Path | None, photos, device: str, batch: int) -> float:
    """Seconds per image through the Scorer (whole-only when no segmenter)."""
    regions = RegionSettings(region_mode="mask" if segmenter else "whole-only")
    runtime = Runtime(device=device, batch_size=batch)
    found = {"segmenter": str(segmenter), "masks": MASKS} if segmenter else {}
    scorer = Scorer([str(checkpoint)], regions=regions, runtime=runtime, **found)
    scorer.score(photos[:1])  # warm-up: loads the models
    synchronize(device)
    started = time.perf_counter()
    results = scorer.score(photos[1:])
    synchronize(device)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    return (time.perf_counter() - started) / (len(photos) - 1)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_gb(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    peak = torch.cuda.max_memory_allocated() / 1e9
    torch.cuda.reset_peak_memory_stats()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--images", type=int, default=17, help="photos (the first warms up)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--reduced", action="store_true", help="tiny models (CPU check)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    photos = sorted(DIBR.glob("*.png"))[: args.images]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        if args.reduced:
            segmenter = tiny.build_sam2(root / "sam2", image_size=256)
        else:
            segmenter = sam2_large(root / "sam2", args.device)
        for name in args.models:
            if args.reduced:
                checkpoint = MODELS[name][0](root / name.replace("/", "--"))
            else:
                checkpoint = real_size(name, root / name.replace("/", "--"), args.device)
            peak_gb(args.device)
            row = {"model": name, "reduced": args.reduced, "device": args.device}
            row["loop_s"] = user_loop(checkpoint, photos, args.device)
            row["loop_peak_gb"] = peak_gb(args.device)
            row["whole_s"] = llmiqa(checkpoint, None, photos, args.device, args.batch_size)
            row["whole_peak_gb"] = peak_gb(args.device)
            row["regions_s"] = llmiqa(checkpoint, segmenter, photos, args.device, args.batch_size)
            row["regions_peak_gb"] = peak_gb(args.device)
            rows.append(row)
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"{len(photos) - 1} measured DIBR photos (1024x768) on {gpu}, batch {args.batch_size}")
    print(f"{'model':<30}{'loop img/s':>11}{'llmiqa whole':>13}{'x loop':>7}"
          f"{'with regions':>13}{'peak GB':>9}")  # fmt: skip
    for r in rows:
        peaks = [r[k] for k in ("loop_peak_gb", "whole_peak_gb", "regions_peak_gb") if r[k]]
        print(f"{r['model']:<30}{1 / r['loop_s']:>11.2f}{1 / r['whole_s']:>13.2f}"
              f"{r['loop_s'] / r['whole_s']:>7.2f}{1 / r['regions_s']:>13.2f}"
              f"{max(peaks) if peaks else float('nan'):>9.1f}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"gpu": gpu, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
