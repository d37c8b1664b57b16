"""Golden outputs of the ORIGINAL SAM2 automatic mask generator, for tests/test_segment.py.

Run by hand, never by the tests, in a scratch virtual environment that has the original
package (it is not a dependency of llmiqa and must not become one):

    python3 -m venv /tmp/sam2-venv
    /tmp/sam2-venv/bin/pip install torch==2.14.1 torchvision==0.29.1
    SAM2_BUILD_CUDA=0 /tmp/sam2-venv/bin/pip install --no-build-isolation sam2==1.1.0
    /tmp/sam2-venv/bin/pip install opencv-python-headless pycocotools scikit-image scipy
    git -C <a clone of github.com/sjtuzzq/Dog-IQA> show zzq:dogiqa/get_mask.py > /tmp/get_mask.py
    cd <llmiqa repo root>
    /tmp/sam2-venv/bin/python scripts/make_sam2_golden.py --authors-get-mask /tmp/get_mask.py

It writes tests/golden/sam2/: `tiny.yaml` (the model config), `tiny.pt` (its weights, in the
original `{"model": state_dict}` format; built only when missing or with --rebuild-model),
`golden.json` and `golden.npz` (what the original code produced). Images are read from
../shared/data (relative to the repo root), never copied.

The tiny model. `tiny.yaml` is sam2_hiera_t.yaml (SAM 2.0, the authors' version) with smaller
widths: trunk 8 wide with blocks [1, 1, 2, 1] and global attention in block 3, neck and
decoder 32 wide, the video-memory modules shrunk (they are unused on images but must exist
for the original loader). The original builds it with hydra: the script copies the yaml into
the installed sam2 package (configs/llmiqa_golden/) so that `build_sam2(name, ckpt,
apply_postprocessing=True)`, the authors' call, finds it.

Its weights. Random weights exercise nothing: every candidate covers the whole image, no IoU
prediction reaches 0.9, NMS keeps one mask (and fitting the decoder by gradient descent to
prompt-dependent targets did not converge in an affordable time on 2 CPU cores). So
`shape_weights` builds the behaviour in: the trunk's position and patch embeddings, the neck
and the decoder's upscaling are written so that every mask is a dot product of a 4-vector
from the prompt with four maps ~(x, y, x^2 + y^2, 20 + image content), i.e. a paraboloid over
the image cut by content: a disc around the prompt, with islands and holes where the image
has edges. The hypernetworks are then fitted (Adam, 3000 steps on 256 prompts, seconds) to
draw discs of three radii (40, 80, 200 low-res pixels) and peak logits (4, 7, 12), which puts
stability scores around 0.8 at offset 0.7, and the IoU head to predictions that swing around
0.9 with the prompt's position. The paths this bypasses are scaled by 0.05, not zeroed, so
every tensor still moves the outputs. The script prints how many candidates each stage keeps
(golden.json["runs"]); in the committed data every filter removes some.

The CUDA kernel. `min_mask_region_area` makes SAM2 fill holes and remove islands of its
low-res logits with a connected-components kernel from its CUDA extension (sam2._C); on a
machine without it SAM2 warns and skips the step. This script runs on the CPU, so it puts in
its place an OpenCV function with the kernel's contract (8-connectivity; per pixel its
component's label and pixel count), and checks that scipy.ndimage, which llmiqa uses,
labels every candidate identically.

Settings: "dogiqa" = the authors' generator (dogiqa/eval.py); "permissive" = a looser one with
a different grid and several decoder batches; "unfiltered" = thresholds at 0 (SAM2 then skips
those filters, so empty masks with NaN stability reach NMS) with the clean-up on. On every
run's masks, and for "dogiqa" also on its first 1, 2 and 3 masks (so that a complement region
appears), the authors' own `get_final_mask` + `get_masked_image` (t = 1000 px) are applied and
each region's weight, kind, pixel count and crop box recorded, for Algorithm 1's tests.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # llmiqa.environment only: the original code is what runs here
from llmiqa.environment import machine, versions  # noqa: E402

OUT = ROOT / "tests" / "golden" / "sam2"
DATA = Path("..") / "shared" / "data"  # relative to ROOT
IMAGES = [
    "images/KADID_I01.png",
    "images/LIVEC_1000.JPG",
    "images/KonIQ_6898804586.jpg",
    "images/KADID_I02_01_03.png",
]
# shape_weights: disc radii (low-res pixels) and peak logits of the three outputs, the IoU
# predictions' centre and swing (pre-sigmoid), the weight of image content in the masks.
SHAPE = dict(radii=(40, 80, 200), heights=(4, 7, 12), iou_center=2.2, iou_swing=1.2, content=0.6)
SEED = 0
SETTINGS = {
    "dogiqa": dict(
        points_per_side=8,
        points_per_batch=128,
        pred_iou_thresh=0.9,
        stability_score_thresh=0.8,
        stability_score_offset=0.7,
        crop_n_layers=0,
        box_nms_thresh=0.9,
        crop_n_points_downscale_factor=1.2,
        min_mask_region_area=1000,
        use_m2m=False,
        output_mode="coco_rle",
    ),
    "permissive": dict(
        points_per_side=4,
        points_per_batch=5,
        pred_iou_thresh=0.8,
        stability_score_thresh=0.5,
        stability_score_offset=1.0,
        box_nms_thresh=0.7,
        output_mode="binary_mask",
    ),
    "unfiltered": dict(
        points_per_side=3,
        points_per_batch=4,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        box_nms_thresh=0.8,
        min_mask_region_area=300,
        output_mode="binary_mask",
    ),
}
MIN_AREA = 1000  # Algorithm 1's t in the authors' eval.py
VERSIONED = ("sam2", "torch", "torchvision", "opencv-python-headless", "pycocotools",
             "scikit-image", "scipy", "numpy")  # fmt: skip


def tiny_yaml() -> str:
    """sam2_hiera_t.yaml (SAM 2.0) with every width shrunk; hydra's package line first."""
    import sam2

    config = yaml.safe_load(
        (Path(sam2.__file__).parent / "configs/sam2/sam2_hiera_t.yaml").read_text()
    )
    model = config["model"]
    model["image_encoder"]["trunk"].update(
        embed_dim=8, num_heads=1, stages=[1, 1, 2, 1], global_att_blocks=[3]
    )
    neck = model["image_encoder"]["neck"]
    neck.update(d_model=32, backbone_channel_list=[64, 32, 16, 8])
    neck["position_encoding"]["num_pos_feats"] = 32
    memory = model["memory_attention"]
    memory.update(d_model=32, num_layers=1)
    memory["layer"].update(d_model=32, dim_feedforward=32)
    memory["layer"]["self_attention"].update(embedding_dim=32)
    memory["layer"]["cross_attention"].update(embedding_dim=32, kv_in_dim=16)
    encoder = model["memory_encoder"]
    encoder.update(out_dim=16, in_dim=32)
    encoder["position_encoding"]["num_pos_feats"] = 16
    encoder["mask_downsampler"].update(embed_dim=32, total_stride=4)
    encoder["fuser"]["layer"]["dim"] = 32
    return "# @package _global_\n\n" + yaml.safe_dump(config, sort_keys=False)


def install_config(text: str) -> str:
    """Put the yaml where sam2's hydra search path finds it; return the name build_sam2 takes."""
    import sam2

    folder = Path(sam2.__file__).parent / "configs" / "llmiqa_golden"
    folder.mkdir(exist_ok=True)
    (folder / "tiny.yaml").write_text(text)
    return "configs/llmiqa_golden/tiny.yaml"


def use_cpu_connected_components() -> list[np.ndarray]:
    """Stand in for sam2._C.get_connected_componnets (CUDA only) with OpenCV, same contract.

    Returns the list it appends each call's per-pixel component sizes to, (N, H, W) each: the
    clean-up calls it twice per decoder batch, on the background and then on the foreground.
    """
    import cv2
    import sam2.utils.misc

    seen = []

    def get_connected_components(mask: torch.Tensor):
        planes = mask.to(torch.uint8).cpu().numpy()
        labels = np.zeros(planes.shape, np.int32)
        counts = np.zeros(planes.shape, np.int32)
        for i, plane in enumerate(planes[:, 0]):
            _, label, stats, _ = cv2.connectedComponentsWithStats(plane, connectivity=8)
            area = stats[:, cv2.CC_STAT_AREA].astype(np.int32)
            area[0] = 0
            labels[i, 0], counts[i, 0] = label, area[label]
            check_scipy(plane.astype(bool), counts[i, 0])
        seen.append(counts[:, 0])
        return torch.from_numpy(labels).to(mask.device), torch.from_numpy(counts).to(mask.device)

    sam2.utils.misc.get_connected_components = get_connected_components
    return seen


CC_CHECKED = [0]


def check_scipy(plane: np.ndarray, counts: np.ndarray) -> None:
    """scipy.ndimage (what llmiqa uses) must give every pixel the same component size as cv2."""
    from scipy import ndimage

    labels, _ = ndimage.label(plane, structure=np.ones((3, 3), bool))
    areas = np.bincount(labels.ravel())
    areas[0] = 0
    assert np.array_equal(areas[labels], counts), "scipy and OpenCV components differ"
    CC_CHECKED[0] += 1


def official_shapes() -> dict[str, dict[str, list[int]]]:
    """Tensor names and shapes of the eight official checkpoints, from the original configs
    (built with random weights: nothing is downloaded)."""
    from hydra import compose
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    shapes = {}
    for folder, prefix in (("sam2", "sam2"), ("sam2.1", "sam2.1")):
        for size in ("t", "s", "b+", "l"):
            name = f"configs/{folder}/{prefix}_hiera_{size}.yaml"
            config = compose(config_name=name)
            OmegaConf.resolve(config)
            model = instantiate(config.model, _recursive_=True)
            shapes[name] = {key: list(value.shape) for key, value in model.state_dict().items()}
            del model
    return shapes


# --- shaping the weights ---------------------------------------------------------------------

LEAK = 0.05  # what is left of the weights a path is switched off with (see shape_weights)


def shape_weights(model, radii, heights, iou_center, iou_swing, content) -> None:
    """Make a random tiny SAM2 segment like a (crude) real one; see the module docstring.

    A mask is `hyper_in . U`: a 4-vector per point and output (from the mask token) times four
    feature maps (from the image). The maps are built to be ~(x, y, x^2 + y^2, 20 + content) of
    each low-res pixel, x and y running -1..1 across the image, by writing the trunk's position
    embedding and patch embedding, passing them unchanged through the first block and the neck
    to `conv_s0`, and giving the decoder's upscaling branch constant offsets. Over (x, y) such a
    dot product is a paraboloid: a disc of any centre and radius around the prompt, cut by
    the content term into islands and holes where the image has edges. The hypernetworks (and
    the IoU head) are then fitted, on prompts at 256 grid positions, to the 4-vectors that draw
    discs of `radii` (low-res pixels) and peak `heights` (logits) around each prompt, and to
    IoU predictions that swing around `iou_center` (pre-sigmoid) with the position.
    Paths that would blur this (attention outputs, the MLPs of the two-way transformer, the
    token embeddings) are scaled down by LEAK, not zeroed, so every tensor still moves the
    outputs and a wrongly mapped one still shows in the parity tests.
    """
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    _engineer(model, content)
    predictor = SAM2ImagePredictor(model)
    predictor.set_image(np.full((256, 256, 3), 124, np.uint8))  # flat grey: no content term
    maps = _feature_maps(model, predictor).reshape(4, -1).T.double()
    yy, xx = (np.mgrid[:256, :256] - 128) / 128
    quadric = np.stack([np.ones(xx.size), xx.ravel(), yy.ravel(), (xx**2 + yy**2).ravel()], 1)
    to_maps = torch.linalg.lstsq(maps, torch.from_numpy(quadric)).solution  # quadric -> maps
    side = np.linspace(8, 1016, 16)
    points = torch.tensor([[x, y] for y in side for x in side], dtype=torch.float32)
    tokens, iou_tokens = _token_features(model, predictor, points)
    centre = (points.double() / 4 - 128) / 128
    decoder = model.sam_mask_decoder
    for j, (radius, height) in enumerate(zip(radii, heights, strict=True)):
        r2 = (radius / 128) ** 2  # height * (1 - |q - centre|^2 / r2) as a quadric in q
        coefficients = torch.stack(
            [
                height * (1 - (centre**2).sum(1) / r2),
                2 * height * centre[:, 0] / r2,
                2 * height * centre[:, 1] / r2,
                torch.full((len(centre),), -height / r2, dtype=torch.double),
            ],
            1,
        )
        fit = _fit(
            decoder.output_hypernetworks_mlps[j + 1],
            tokens[:, j],
            (coefficients @ to_maps.T).float(),
        )
        print(f"hypernetwork {j + 1}: R^2 {fit}")
    swing = [
        iou_center
        + iou_swing * torch.sin(2 * np.pi * (0.65 * centre[:, 0] + 0.35 * centre[:, 1]) + k)
        for k in range(4)
    ]
    fit = _fit(decoder.iou_prediction_head, iou_tokens, torch.stack(swing, 1).float().sigmoid())
    print(f"IoU head: R^2 {fit}")


def _engineer(model, content: float) -> None:
    with torch.no_grad():
        trunk = model.image_encoder.trunk
        n = trunk.pos_embed.shape[-1]
        line = torch.linspace(-1, 1, n)
        x, y = line[None, :].expand(n, n), line[:, None].expand(n, n)
        trunk.pos_embed.zero_()
        trunk.pos_embed_window.zero_()
        trunk.pos_embed[0, 0], trunk.pos_embed[0, 1], trunk.pos_embed[0, 2] = x, y, x**2 + y**2
        patch = trunk.patch_embed.proj
        patch.weight.zero_()
        patch.bias.zero_()
        patch.weight[3] = 1.0 / patch.weight[3].numel()  # channel 3: local mean of the image
        first = trunk.blocks[0]
        for layer in (first.attn.proj, first.mlp.layers[-1]):
            layer.weight.mul_(LEAK)
            layer.bias.mul_(LEAK)
        lateral = model.image_encoder.neck.convs[-1].conv  # stage 1 -> the 256x256 level
        lateral.weight.zero_()
        lateral.bias.zero_()
        decoder = model.sam_mask_decoder
        decoder.conv_s0.weight.zero_()
        decoder.conv_s0.bias.zero_()
        for c, gain in enumerate((1.0, 1.0, 1.0, content)):
            lateral.weight[c, c] = 1.0
            decoder.conv_s0.weight[c, c] = gain
        decoder.conv_s1.weight.mul_(LEAK)
        decoder.conv_s1.bias.mul_(LEAK)
        upscale_1, _, _, upscale_2, _ = decoder.output_upscaling
        upscale_1.weight.mul_(LEAK)
        upscale_2.weight.mul_(LEAK)
        upscale_2.bias.copy_(torch.tensor([3.0, 3.0, 3.0, 20.0]))  # GELU about linear above
        transformer = decoder.transformer
        first_self = transformer.layers[0].self_attn  # no residual: make it average the tokens
        first_self.q_proj.weight.mul_(LEAK)
        first_self.k_proj.weight.mul_(LEAK)
        for layer in transformer.layers:
            attentions = [layer.cross_attn_token_to_image, layer.cross_attn_image_to_token]
            if layer is not transformer.layers[0]:
                attentions.append(layer.self_attn)
            for attention in attentions:
                attention.out_proj.weight.mul_(LEAK)
            layer.mlp.layers[-1].weight.mul_(LEAK)
        transformer.final_attn_token_to_image.out_proj.weight.mul_(LEAK)
        prompts = model.sam_prompt_encoder  # let the prompt's position dominate the tokens
        for embedding in (
            decoder.obj_score_token,
            decoder.iou_token,
            decoder.mask_tokens,
            prompts.not_a_point_embed,
            *prompts.point_embeddings,
        ):
            embedding.weight.mul_(0.1)


def _decode(model, predictor, points: torch.Tensor):
    labels = torch.ones(len(points), 1, dtype=torch.int)
    return predictor._predict(points[:, None], labels, multimask_output=True, return_logits=True)


def _feature_maps(model, predictor) -> torch.Tensor:
    """The four maps U (4, 256, 256): hypernetworks set to output unit vectors."""
    mlps = model.sam_mask_decoder.output_hypernetworks_mlps
    saved = [(mlp.layers[-1].weight.clone(), mlp.layers[-1].bias.clone()) for mlp in mlps]
    maps = []
    with torch.no_grad():
        for channels in ((0, 1, 2), (3, 3, 3)):
            for mlp, c in zip(mlps[1:], channels, strict=True):
                mlp.layers[-1].weight.zero_()
                mlp.layers[-1].bias.zero_()
                mlp.layers[-1].bias[c] = 1.0
            _, _, low = _decode(model, predictor, torch.tensor([[512.0, 512.0]]))
            maps += list(low[0]) if channels[0] == 0 else [low[0, 0]]
        for mlp, (weight, bias) in zip(mlps, saved, strict=True):
            mlp.layers[-1].weight.copy_(weight)
            mlp.layers[-1].bias.copy_(bias)
    return torch.stack(maps)


def _token_features(model, predictor, points: torch.Tensor):
    """The inputs of the three output hypernetworks and of the IoU head, per prompt."""
    decoder = model.sam_mask_decoder
    seen = {}
    hooks = [
        mlp.register_forward_hook(lambda _, args, __, k=k: seen.__setitem__(k, args[0]))
        for k, mlp in enumerate(decoder.output_hypernetworks_mlps)
    ]
    hooks.append(
        decoder.iou_prediction_head.register_forward_hook(
            lambda _, a, __: seen.__setitem__("iou", a[0])
        )
    )
    tokens, iou_tokens = [], []
    for start in range(0, len(points), 96):
        _decode(model, predictor, points[start : start + 96])
        tokens.append(torch.stack([seen[k] for k in (1, 2, 3)], 1))
        iou_tokens.append(seen["iou"])
    for hook in hooks:
        hook.remove()
    return torch.cat(tokens), torch.cat(iou_tokens)


def _fit(mlp, inputs: torch.Tensor, targets: torch.Tensor, steps: int = 3000) -> list[float]:
    """Adam on a small MLP, inputs -> targets (normalised squared error); R^2 per output."""
    scale = targets.std(0).clamp(min=1e-6)
    optimiser = torch.optim.Adam(mlp.parameters(), lr=3e-3)
    with torch.enable_grad():
        for _ in range(steps):
            loss = (((mlp(inputs) - targets) / scale) ** 2).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    with torch.no_grad():
        residual = ((mlp(inputs) - targets) ** 2).sum(0)
        return (1 - residual / ((targets - targets.mean(0)) ** 2).sum(0)).round(decimals=3).tolist()


# --- recording the original generator ----------------------------------------------------------


def rle_counts(mask: np.ndarray) -> np.ndarray:
    """Uncompressed COCO RLE of a boolean mask: run lengths in column-major order, 0s first."""
    flat = np.asarray(mask, bool).T.ravel()
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds)
    return np.concatenate([[0], runs]) if flat[0] else runs


def run_generator(model, image: np.ndarray, settings: dict, components: list) -> tuple[list, dict]:
    """The original generator's output, plus every candidate and each stage's survivors.

    `components` is the stand-in kernel's record (use_cpu_connected_components): from it, which
    candidates the min_mask_region_area clean-up changed (holes filled, islands removed).
    """
    import sam2.automatic_mask_generator as amg_module
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
    from sam2.utils.amg import batched_mask_to_box, calculate_stability_score

    generator = SAM2AutomaticMaskGenerator(model, **settings)
    record = {"iou": [], "stability": [], "boxes": [], "areas": [], "points": [], "nms": []}
    predict = generator.predictor._predict

    def recording_predict(points, labels, **kwargs):
        masks, iou, low = predict(points, labels, **kwargs)
        flat = masks.flatten(0, 1)  # postprocessed full-size logits, as the generator sees them
        record["iou"].append(iou.flatten(0, 1))
        record["stability"].append(
            calculate_stability_score(
                flat, generator.mask_threshold, generator.stability_score_offset
            )
        )
        binary = flat > generator.mask_threshold
        record["boxes"].append(batched_mask_to_box(binary))
        record["areas"].append(binary.sum((1, 2)))
        return masks, iou, low

    batched_nms = amg_module.batched_nms

    def recording_nms(boxes, scores, categories, iou_threshold):
        keep = batched_nms(boxes, scores, categories, iou_threshold)
        record["nms"].append((boxes.clone(), scores.clone(), keep.clone()))
        return keep

    generator.predictor._predict = recording_predict
    amg_module.batched_nms = recording_nms
    components.clear()
    try:
        anns = generator.generate(image)
    finally:
        amg_module.batched_nms = batched_nms
    area = settings.get("min_mask_region_area", 0)
    small = [((c > 0) & (c <= area)).any(axis=(1, 2)) for c in components]
    if small:  # per batch: the background (holes) call, then the foreground (islands) call
        record["filled"] = [torch.from_numpy(np.concatenate(small[0::2]))]
        record["removed"] = [torch.from_numpy(np.concatenate(small[1::2]))]
    ((nms_boxes, nms_scores, keep),) = record.pop("nms")
    stages = {key: torch.cat(values).cpu().numpy() for key, values in record.items() if values}
    height, width = image.shape[:2]
    points = amg_module.build_all_layer_point_grids(settings["points_per_side"], 0, 1)[0]
    stages["points"] = np.repeat(
        (points * np.array([[width, height]])).astype(np.float32), 3, axis=0
    )
    stages["nms_boxes"] = nms_boxes.numpy()
    stages["nms_scores"] = nms_scores.numpy()
    stages["nms_keep"] = keep.numpy()
    return anns, stages


def decode_segmentation(ann: dict) -> np.ndarray:
    from pycocotools import mask as mask_utils

    segmentation = ann["segmentation"]
    if isinstance(segmentation, dict):
        return mask_utils.decode(segmentation).astype(bool)
    return np.asarray(segmentation, bool)


def coco_rle(mask: np.ndarray) -> dict:
    """A mask as the authors' code reads masks: COCO RLE with string counts (SAM2's coco_rle)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": rle["size"], "counts": rle["counts"].decode("utf-8")}


def authors_regions(get_mask, anns: list, shape: tuple[int, int]) -> list[dict]:
    """The authors' Algorithm 1 (get_final_mask) and crops (get_masked_image, bbox=True) on
    these masks: weight, kind and crop box of each region, in their order."""
    height, width = shape
    coords = np.arange(height * width, dtype=np.int32).reshape(height, width)  # pixel index
    regions = []
    final = get_mask.get_final_mask(np.zeros((height, width, 3), np.uint8), anns, MIN_AREA)
    for region in final:
        crop = np.asarray(get_mask.get_masked_image(coords, region["segmentation"], bbox=True))
        y0, x0 = divmod(int(crop[0, 0]), width)
        pixels = int(decode_segmentation(region).sum())
        regions.append(
            {
                "area": int(region["area"]),
                "complement": not any(region is ann for ann in anns),
                "pixels": pixels,
                "crop": [x0, y0, x0 + crop.shape[1], y0 + crop.shape[0]],
            }
        )
    return regions


def load_module(path: Path):
    spec = importlib.util.spec_from_file_location("authors_get_mask", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--authors-get-mask", type=Path, required=True, help="their get_mask.py")
    parser.add_argument("--rebuild-model", action="store_true", help="build and shape tiny.pt anew")
    args = parser.parse_args()
    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    from sam2.build_sam import build_sam2

    OUT.mkdir(parents=True, exist_ok=True)
    text = tiny_yaml()
    (OUT / "tiny.yaml").write_text(text)
    config = install_config(text)
    load = lambda name: np.asarray(Image.open(ROOT / DATA / name).convert("RGB"))  # noqa: E731
    if args.rebuild_model or not (OUT / "tiny.pt").exists():
        model = build_sam2(config, None, device="cpu", apply_postprocessing=True)
        shape_weights(model, **SHAPE)
        torch.save({"model": model.state_dict()}, OUT / "tiny.pt")
    # The authors' call: build from the yaml and the checkpoint file.
    model = build_sam2(config, str(OUT / "tiny.pt"), device="cpu", apply_postprocessing=True)
    components = use_cpu_connected_components()
    get_mask = load_module(args.authors_get_mask)
    with gzip.GzipFile(OUT / "official_shapes.json.gz", "wb", mtime=0) as file:
        file.write(json.dumps(official_shapes(), sort_keys=True, separators=(",", ":")).encode())

    meta = {"images": {}, "settings": SETTINGS, "runs": {}}
    arrays = {}
    for name in IMAGES:
        image = load(name)
        key = Path(name).stem
        meta["images"][key] = {
            "path": str(DATA / name),
            "height": image.shape[0],
            "width": image.shape[1],
        }
        for setting, values in SETTINGS.items():
            anns, stages = run_generator(model, image, values, components)
            run = f"{setting}/{key}"
            masks = [decode_segmentation(ann) for ann in anns]
            counts = [rle_counts(mask) for mask in masks]
            arrays[f"{run}/rle"] = (
                np.concatenate(counts).astype(np.int32) if counts else np.zeros(0, np.int32)
            )
            arrays[f"{run}/rle_lengths"] = np.array([len(c) for c in counts], np.int32)
            arrays[f"{run}/predicted_iou"] = np.array(
                [a["predicted_iou"] for a in anns], np.float32
            )
            arrays[f"{run}/stability_score"] = np.array(
                [a["stability_score"] for a in anns], np.float32
            )
            arrays[f"{run}/area"] = np.array([a["area"] for a in anns], np.int64)
            arrays[f"{run}/bbox_xywh"] = np.array([a["bbox"] for a in anns], np.float32).reshape(
                -1, 4
            )
            arrays[f"{run}/point"] = np.array(
                [a["point_coords"][0] for a in anns], np.float32
            ).reshape(-1, 2)
            for field, value in stages.items():
                arrays[f"{run}/candidates/{field}"] = value
            iou_pass = (
                stages["iou"] > values["pred_iou_thresh"]
                if values["pred_iou_thresh"] > 0
                else np.ones(len(stages["iou"]), bool)
            )
            stable = (
                stages["stability"] >= values["stability_score_thresh"]
                if values["stability_score_thresh"] > 0
                else np.ones(len(stages["iou"]), bool)
            )
            summary = {
                "candidates": len(stages["iou"]),
                "pass_iou": int(iou_pass.sum()),
                "pass_iou_and_stability": int((iou_pass & stable).sum()),
                "after_nms": len(anns),
                "holes_filled": int(stages["filled"].sum()) if "filled" in stages else 0,
                "islands_removed": int(stages["removed"].sum()) if "removed" in stages else 0,
                "areas": [int(a["area"]) for a in anns],
            }
            coco = [
                {**ann, "segmentation": coco_rle(mask)}
                for ann, mask in zip(anns, masks, strict=True)
            ]
            summary["authors_regions"] = authors_regions(get_mask, coco, image.shape[:2])
            if setting == "dogiqa":  # fewer masks: the complement region appears
                summary["authors_regions_of_first"] = {
                    k: authors_regions(get_mask, coco[:k], image.shape[:2]) for k in (1, 2, 3)
                }
            meta["runs"][run] = summary
            print(run, {k: v for k, v in summary.items() if not k.startswith(("areas", "authors"))})
    meta["cv2_scipy_components_checked"] = CC_CHECKED[0]
    meta["versions"] = versions(VERSIONED)
    meta["machine"] = machine()  # float kernels differ between CPUs: tests print both
    (OUT / "golden.json").write_text(json.dumps(meta, indent=1) + "\n")
    np.savez_compressed(OUT / "golden.npz", **arrays)
    size = sum(f.stat().st_size for f in OUT.iterdir() if f.is_file())
    print(f"wrote {OUT} ({size / 1e6:.2f} MB); {CC_CHECKED[0]} component labellings checked")


if __name__ == "__main__":
    sys.exit(main())
