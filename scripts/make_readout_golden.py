"""Golden outputs of the ORIGINAL SeP-IQA, Q-Align and Q-Bench readouts, for llmiqa's tests.

Run by hand, never by the tests:

    .venv/bin/python scripts/make_readout_golden.py \\
        --model qwen2-vl-tiny=<folder> --model mplug-owl3-tiny=<folder> \\
        --images <img> [<img> ...] \\
        --sep-iqa <weolix/SeP-IQA git dir> \\
        --q-align <Q-Future/Q-Align git dir> <chaofengc/IQA-PyTorch git dir> \\
        --q-bench <Q-Future/Q-Bench git dir> \\
        --out tests/golden/readouts

The git dirs are (bare) clones of the original repositories; each is read at the commit
pinned in SOURCES below with `git show`, never from a work tree, and nothing of theirs is
copied into this repository. `--q-align` takes both Q-Align and pyiqa (IQA-PyTorch), in any
order: each is recognised by the file it holds.

What runs. The models are tiny random checkpoints (weights prove the plumbing, never
accuracy). For each model, protocol and image this script computes the raw float32 logits
of the whole vocabulary at the answer position (the model code is llmiqa's: transformers for
Qwen2-VL and the like, llmiqa.models.mplug_owl3 for mPLUG-Owl3); those logits are the input
of the readouts, and the readouts are the original code:

- SeP-IQA: `evaluation_utils.get_embed` (task "IQA") builds the quality direction v from the
  model's input-embedding table, then `evaluators.q_evaluate` scores the logits with it. Both
  are their functions, executed from their module source; the model they call is a stand-in
  that exposes the real tokenizer, the real embedding layer (`.LLM.get_input_embeddings()`)
  and, as its forward, the logits computed here. Their `data_loader.list_collate` batches.
  Its SRCC/PLCC (against dummy labels, no part of the readout) raise on current scipy
  because its scores come out (1, batch)-shaped; it is then rerun with NaN stand-ins for
  `spearmanr`/`pearsonr` (recorded in the JSON).
- Q-Align: pyiqa's `MPLUGOwl2LlamaForCausalLM.score` (weights 5..1) and Q-Align's
  `QAlignScorer` (`__init__` and `forward`, weights 1..0): their code, with a stand-in for the
  mPLUG-Owl2 model that returns the logits computed here. Their word ids are
  `[id_[1] for id_ in tokenizer(words)["input_ids"]]`, which on LLaMA (BOS, then "▁word")
  is the word-initial token; their code gets the real tokenizer wrapped with those two
  conventions, so that it picks the word-initial tokens of this tokenizer (checked).
- Q-Bench: `softmax(a, b, temperature=100)` of `example_code_for_idefics/a3_assessment_all.py`
  on the logits of " good" and " poor" (taken with `.item()`, as they do).

Precision. The originals ran bf16 (SeP-IQA, Q-Bench's IDEFICS) or fp16 (Q-Align) models; the
tiny models here run float32. Each readout is run (a) as faithfully as possible to the
original's dtypes, (b) in float32 (the golden value: llmiqa computes in float32 from float32
logits) and (c) as a float64 evaluation of the same formula (our code, as a reference); the
differences are written to the JSON and README. Q-Align's `.half()` weight tensor cannot
multiply float32 probabilities at all (torch raises); the float32 run pre-sets the same
weights in float32, which both of their code paths allow without editing a line.

Word tokens. Q-Align and Q-Bench read the first token of " " + word (add_special_tokens=False).
When two of excellent/good/fair/poor/bad share that token the readout is meaningless and this
script stops: give a tokenizer where they differ.

Outputs per model: <out>/<model>.npz, <out>/<model>.json; and <out>/README.md for the run.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import json
import linecache
import shlex
import subprocess
import sys
import textwrap
import types
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from llmiqa.environment import machine, versions  # noqa: E402

IMAGE = "<image>"  # where the image goes in a user turn (llmiqa.method.standards.IMAGE)

# The prompts. User turns as llmiqa writes them (IMAGE marks the image), separators as in
# each original: SeP-IQA puts its <|image|> right before the text; Q-Align writes
# "...image?\n<|image|>"; Q-Bench's IDEFICS prompt is text then the image, no separator.
# `prefix` opens the assistant turn after the template's generation prompt.
PROTOCOLS = {
    "sepiqa": dict(
        user=IMAGE + "Taking into account the details and the rationality of the image, "
        "how would you rate the quality of this image?",
        prefix="The quality of the image is very",
    ),
    "qalign": dict(
        user="How would you rate the quality of this image?\n" + IMAGE,
        prefix="The quality of the image is",
    ),
    "qbench": dict(
        user="Rate the quality of the image." + IMAGE,
        prefix="The quality of the image is",
    ),
}
QALIGN_WORDS = ("excellent", "good", "fair", "poor", "bad")  # their order
QBENCH_WORDS = ("good", "poor")
SEPIQA_TASK = "IQA"

# Pinned sources: (repository, commit, file, what is run from it).
SOURCES = {
    "sep-iqa": dict(
        repository="weolix/SeP-IQA",
        commit="5d330c0ba04267ac9ee7514aaa22535494891a27",
        files={
            "evaluation_utils.py": ["get_embed"],
            "evaluators.py": ["q_evaluate"],
            "data_loader.py": ["list_collate"],
        },
    ),
    "q-align": dict(
        repository="Q-Future/Q-Align",
        commit="14dfdffb3b970c0727d48938b8f3741a65acbd6e",
        files={
            "q_align/evaluate/scorer.py": [
                "QAlignScorer.__init__",
                "QAlignScorer.forward",
                "QAlignScorer.expand2square",
            ],
            "q_align/mm_utils.py": ["tokenizer_image_token"],
            "q_align/constants.py": ["IMAGE_TOKEN_INDEX", "DEFAULT_IMAGE_TOKEN"],
        },
    ),
    "pyiqa": dict(
        repository="chaofengc/IQA-PyTorch",
        commit="01ae427f9afd66842031d3a7cb694dcad5b5cbb8",
        files={
            "pyiqa/archs/q_align/modeling_mplug_owl2.py": [
                "IMAGE_TOKEN_INDEX",
                "DEFAULT_IMAGE_TOKEN",
                "tokenizer_image_token",
                "MPLUGOwl2LlamaForCausalLM.score",
            ],
        },
    ),
    "q-bench": dict(
        repository="Q-Future/Q-Bench",
        commit="f19783ea1890212794ab220c90c7f71342a6289b",
        files={"example_code_for_idefics/a3_assessment_all.py": ["softmax"]},
    ),
}

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # one-align's image_mean (stand-in)
VERSIONS = ("torch", "transformers", "tokenizers", "numpy", "scipy", "pandas", "pillow")


# ---- reading the original code -------------------------------------------------------------


class Source:
    """One pinned repository read with git show."""

    def __init__(self, key: str, folder: Path) -> None:
        self.key, self.info = key, SOURCES[key]
        self.git = git_dir(folder)
        self.commit = self.info["commit"]
        check = subprocess.run(
            ["git", "-C", str(self.git), "cat-file", "-e", f"{self.commit}^{{commit}}"],
            capture_output=True,
        )
        if check.returncode != 0:
            sys.exit(f"{self.git}: has no commit {self.commit} ({self.info['repository']})")

    def text(self, path: str) -> str:
        return read_at(self.git, self.commit, path)

    def filename(self, path: str) -> str:
        return f"{self.info['repository']}@{self.commit[:7]}:{path}"

    def module(self, name: str, path: str) -> types.ModuleType:
        """Their file executed as module `name` (registered in sys.modules)."""
        module = types.ModuleType(name)
        module.__file__ = self.filename(path)
        exec(compile_source(self.text(path), module.__file__), module.__dict__)
        sys.modules[name] = module
        return module

    def definitions(self, path: str, names: list[str], namespace: dict) -> dict:
        """Top-level functions / assignments and Class.method functions of their file,
        each executed from its own source text in `namespace`."""
        source = self.text(path)
        tree = ast.parse(source)
        for name in names:
            owner, _, attr = name.rpartition(".")
            body = tree.body
            if owner:
                body = next(
                    n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == owner
                ).body
            node = next(
                n
                for n in body
                if (isinstance(n, ast.FunctionDef) and n.name == attr)
                or (
                    isinstance(n, ast.Assign)
                    and any(getattr(t, "id", None) == attr for t in n.targets)
                )
            )
            segment = "\n" * (node.lineno - 1) + textwrap.dedent(
                ast.get_source_segment(source, node, padded=True)
            )  # same line numbers as the file, for tracebacks
            exec(compile_source(segment, self.filename(path)), namespace)
        return namespace


def git_dir(folder: Path) -> Path:
    """The git directory: the folder itself, or its repo/ or .git/ (the mirror layout)."""
    for candidate in (folder, folder / "repo", folder / ".git"):
        if (candidate / "HEAD").is_file() and (candidate / "objects").is_dir():
            return candidate
    sys.exit(f"{folder}: not a git directory")


def read_at(git: Path, commit: str, path: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(git), "show", f"{commit}:{path}"], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise FileNotFoundError(f"{git} {commit}:{path}: {result.stderr.strip()}")
    return result.stdout


def compile_source(text: str, filename: str):
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    return compile(text, filename, "exec")


def has_file(git: Path, commit: str, path: str) -> bool:
    result = subprocess.run(
        ["git", "-C", str(git), "cat-file", "-e", f"{commit}:{path}"], capture_output=True
    )
    return result.returncode == 0


@contextlib.contextmanager
def stub_modules(stubs: dict[str, types.ModuleType], only_missing: tuple[str, ...] = ()):
    """Put modules into sys.modules for the duration; `only_missing` ones only when they
    cannot be imported here. Yields the names actually stubbed."""
    used, saved = [], {}
    for name, module in stubs.items():
        if name in only_missing:
            try:
                __import__(name)
                continue
            except ImportError:
                pass
        saved[name] = sys.modules.get(name)
        sys.modules[name] = module
        used.append(name)
    try:
        yield used
    finally:
        for name in used:
            if saved[name] is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = saved[name]


def stub(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    module.__path__ = []  # importable as a package too
    return module


# ---- the models: answer-position logits ---------------------------------------------------


class Model:
    """A tiny checkpoint: renders each protocol's prompt and returns its answer logits."""

    def __init__(self, name: str, folder: Path) -> None:
        self.name, self.folder = name, folder
        config = json.loads((folder / "config.json").read_text())
        self.kind = "mplug-owl3" if config.get("model_type") == "mplugowl3" else "transformers"
        if self.kind == "mplug-owl3":
            from llmiqa.models.mplug_owl3 import MplugOwl3Model, MplugOwl3Processor

            self.model = MplugOwl3Model.from_pretrained(
                folder, dtype=torch.float32, device=torch.device("cpu")
            )
            self.processor = MplugOwl3Processor.from_pretrained(folder)
            self.embedding = self.model.language_model.model.embed_tokens
        else:
            from transformers import AutoModelForImageTextToText, AutoProcessor

            self.processor = AutoProcessor.from_pretrained(folder)
            self.model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32)
            self.model.eval()
            self.embedding = self.model.get_input_embeddings()
        self.tokenizer = self.processor.tokenizer
        self.tokenizer_class = type(self.tokenizer).__name__

    def render(self, protocol: dict) -> str:
        """The text up to the answer: chat template with its generation prompt, then the
        assistant's opening words."""
        if self.kind == "mplug-owl3":
            return self.processor.render(self._owl3_messages(protocol)) + protocol["prefix"]
        return (
            self.processor.apply_chat_template(
                self._hf_messages(protocol), add_generation_prompt=True, tokenize=False
            )
            + protocol["prefix"]
        )

    @staticmethod
    def _owl3_messages(protocol: dict) -> list[dict]:
        from llmiqa.models.mplug_owl3.processing import IMAGE_MARKER

        return [{"role": "user", "content": protocol["user"].replace(IMAGE, IMAGE_MARKER)}]

    @staticmethod
    def _hf_messages(protocol: dict) -> list[dict]:
        before, after = protocol["user"].split(IMAGE)
        parts = [
            {"type": "text", "text": before},
            {"type": "image"},
            {"type": "text", "text": after},
        ]
        return [{"role": "user", "content": [p for p in parts if p.get("text") != ""]}]

    @torch.inference_mode()
    def logits(self, protocol: dict, image: Image.Image) -> tuple[np.ndarray, dict]:
        """(vocab,) float32 raw logits at the answer position, and what went in."""
        if self.kind == "mplug-owl3":
            from llmiqa.models.mplug_owl3.processing import Encoded

            sample = self.processor(self._owl3_messages(protocol), [image], cut=True)
            prefix = self.tokenizer(protocol["prefix"], add_special_tokens=False)["input_ids"]
            # The original tokenises "\n<|im_start|>assistant\n" + prefix as one chunk: check
            # that appending the prefix's own tokens gives the same ids.
            turn = "\n<|im_start|>assistant\n"
            whole = self.tokenizer(turn + protocol["prefix"], add_special_tokens=False)["input_ids"]
            parts = self.tokenizer(turn, add_special_tokens=False)["input_ids"] + prefix
            if whole != parts:
                sys.exit(f"{self.name}: the assistant prefix tokenises differently on its own")
            sample = Encoded(
                sample.input_ids + prefix, sample.image_starts, sample.pixel_values, sample.grids
            )
            batch = self.processor.collate([sample])
            row = self.model(**batch, logits_to_keep=1).logits[0, -1]
            info = {
                "input_ids": sample.input_ids,
                "cut_grid": sample.grids[0],
                "crops": int(sample.pixel_values.shape[0]),
            }
        else:
            inputs = self.processor(
                text=[self.render(protocol)], images=[image], return_tensors="pt"
            )
            row = self.model(**inputs, logits_to_keep=1).logits[0, -1]
            info = {"input_ids": inputs["input_ids"][0].tolist()}
        return row.float().numpy().copy(), info


def word_ids(model: Model, words: tuple[str, ...]) -> tuple[list[int], list[list[str]]]:
    """First token of " " + word, and every token of it (for the record)."""
    ids, pieces = [], []
    for word in words:
        tokens = model.tokenizer(" " + word, add_special_tokens=False)["input_ids"]
        ids.append(tokens[0])
        pieces.append(model.tokenizer.convert_ids_to_tokens(tokens))
    return ids, pieces


def check_distinct(model: Model, words: tuple[str, ...], ids: list[int], pieces) -> None:
    seen: dict[int, str] = {}
    for word, token, piece in zip(words, ids, pieces, strict=True):
        if token in seen:
            sys.exit(
                f"{model.name}: the words {seen[token]!r} and {word!r} share their first token "
                f"{token} ({piece[0]!r}) with this tokenizer ({model.tokenizer_class}, "
                f"{model.folder}); Q-Align/Q-Bench readouts cannot tell them apart. Give a "
                "checkpoint whose tokenizer gives each of " + ", ".join(words) + " its own "
                "word-initial token."
            )
        seen[token] = word


# ---- the readouts ------------------------------------------------------------------------


class RecordingTokenizer:
    """The real tokenizer; remembers what the original code asked of it."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer, self.calls = tokenizer, []

    def __call__(self, *args, **kwargs):
        out = self._tokenizer(*args, **kwargs)
        ids = out["input_ids"]
        self.calls.append(
            {
                "args": list(args),
                "kwargs": kwargs,
                "input_ids": ids.tolist() if hasattr(ids, "tolist") else ids,
            }
        )
        return out

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


class SepModel:
    """Stand-in for SeP-IQA's MultimodalQualityEvaluator: its tokenizer, its LLM's input
    embeddings, and a forward whose last position holds the logits computed here."""

    def __init__(self, tokenizer, embedding: torch.nn.Module, logits: torch.Tensor) -> None:
        self.tokenizer = RecordingTokenizer(tokenizer)
        self.LLM = SimpleNamespace(get_input_embeddings=lambda: embedding)
        self.dev = torch.device("cpu")
        self.logits, self.batches = logits, []

    def eval(self):
        return self

    def __call__(self, image_or_video=None, **_):
        self.batches.append(list(image_or_video))
        rows = self.logits[torch.tensor(image_or_video)]
        return SimpleNamespace(logits=rows[:, None, :])


def run_sepiqa(sep: Source, model: Model, logits: np.ndarray, embedding: torch.nn.Module) -> dict:
    """Their get_embed then their q_evaluate, on the stand-in."""
    heavy = {
        "ffmpeg": stub("ffmpeg"),
        "decord": stub("decord", VideoReader=None, cpu=None),
        "pandas": stub("pandas"),
    }
    with stub_modules(heavy, only_missing=tuple(heavy)) as stubbed:
        sep.module("data_loader", "data_loader.py")  # evaluators imports list_collate
        utils = sep.module("evaluation_utils", "evaluation_utils.py")
        evaluators = sep.module("evaluators", "evaluators.py")
    try:
        standin = SepModel(model.tokenizer, embedding, torch.from_numpy(logits))
        val_embed = utils.get_embed(standin, standin.dev, TASK=SEPIQA_TASK)
        words = [call["args"][0] for call in standin.tokenizer.calls]
        ids = [call["input_ids"][0] for call in standin.tokenizer.calls]
        n = len(logits)
        # Labels only feed their SRCC/PLCC (needs n >= 2); the scores do not depend on them.
        dataset = [(i, float(i)) for i in range(n)]
        # bsz = n: one batch. Their score has shape (1, batch) (val_embed is (1, H), unsqueezed
        # twice), so per batch one list is appended; batches of unequal size then fail in
        # torch.tensor. One batch avoids that and is per sample identical.
        metrics = "their scipy spearmanr/pearsonr"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # constant-input warnings of their SRCC/PLCC
            try:
                _, exp = evaluators.q_evaluate(standin, dataset, val_embed, bsz=n)
            except ValueError as error:
                # Their (1, n) score tensor against (n,) labels: scipy raises. The metrics are
                # no part of the readout; stand-ins that return NaN let it finish.
                metrics = f"stand-ins returning NaN; scipy raised {type(error).__name__}: {error}"
                nan = SimpleNamespace(statistic=float("nan"))
                evaluators.spearmanr = evaluators.pearsonr = lambda *a, **k: nan
                standin.batches.clear()
                _, exp = evaluators.q_evaluate(standin, dataset, val_embed, bsz=n)
        scores = np.asarray(exp["val_pred_scores"], dtype=np.float64).reshape(-1)
        q_tokens = {
            w: standin.tokenizer.encode(w)[0] for w in ("good", "poor", "bad", "fair", "excellent")
        }
        return {
            "scores": scores,
            "direction": val_embed.detach().float().numpy().reshape(-1),
            "direction_dtype": str(val_embed.dtype),
            "words": words,
            "ids": ids,
            "batches": standin.batches,
            "stubbed_modules": stubbed,
            "metrics": metrics,
            "by_products": {
                "qbench_val_scores": np.asarray(exp["qbench_val_scores"]).reshape(-1).tolist(),
                "qalign_val_scores": np.asarray(exp["qalign_val_scores"]).reshape(-1).tolist(),
                "token_ids": q_tokens,
                "tokens": {
                    w: model.tokenizer.convert_ids_to_tokens(i) for w, i in q_tokens.items()
                },
            },
        }
    finally:
        for name in ("data_loader", "evaluation_utils", "evaluators"):
            sys.modules.pop(name, None)


def sepiqa_float64(logits: np.ndarray, table: np.ndarray, positive, negative, k=100) -> tuple:
    """Our float64 evaluation of the same formula (reference only)."""
    e = table.astype(np.float64)
    v = e[positive].mean(0) - e[negative].mean(0)
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    chosen = e[top]  # (n, k, H)
    cos = (chosen @ v) / np.maximum(np.linalg.norm(chosen, axis=-1) * np.linalg.norm(v), 1e-8)
    return (np.take_along_axis(logits.astype(np.float64), top, 1) * cos).sum(1), top


class LlamaLikeTokenizer:
    """The real tiny tokenizer with the two conventions of LLaMA's SentencePiece tokenizer
    that Q-Align's code relies on: a BOS first and a space before the text (the dummy
    prefix "▁"). Their `[id_[1] for id_ in tokenizer(words)["input_ids"]]` then picks the
    word-initial token, as on LLaMA. The BOS is a placeholder id that reaches no model."""

    bos_token_id = -1

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer

    def __call__(self, text, **_):
        from transformers import BatchEncoding

        texts = [text] if isinstance(text, str) else list(text)
        ids = [
            [self.bos_token_id] + self._tokenizer(" " + t, add_special_tokens=False)["input_ids"]
            for t in texts
        ]
        return BatchEncoding({"input_ids": ids[0] if isinstance(text, str) else ids})


class OwlModel:
    """Stand-in for the mPLUG-Owl2 model of Q-Align / pyiqa: called with (input_ids,
    images=...), returns {"logits": (batch, 1, vocab)} holding the logits computed here."""

    def __init__(self, logits: torch.Tensor, tokenizer=None, ids=None) -> None:
        self.logits, self.device, self.input_ids = logits, torch.device("cpu"), []
        self.tokenizer, self.preferential_ids_ = tokenizer, ids

    def __call__(self, input_ids, images=None, **_):
        self.input_ids.append(input_ids[0].tolist())
        assert input_ids.shape[0] == self.logits.shape[0] == len(images)
        return {"logits": self.logits[:, None, :]}


def run_pyiqa(pyiqa: Source, model: Model, logits: np.ndarray, ids: list[int]) -> dict:
    """pyiqa's MPLUGOwl2LlamaForCausalLM.score with self = an OwlModel."""
    path = "pyiqa/archs/q_align/modeling_mplug_owl2.py"
    namespace = pyiqa.definitions(path, SOURCES["pyiqa"]["files"][path], {"torch": torch})
    score = namespace["score"]
    n = len(logits)
    image_tensor = torch.zeros(n, 3, 1, 1).half()  # as qalign_arch passes it; unused here
    runs: dict[str, object] = {}

    def call(dtype, weights=None):
        owl = OwlModel(torch.from_numpy(logits).to(dtype), LlamaLikeTokenizer(model.tokenizer), ids)
        if weights is not None:  # their `if not hasattr(self, "weight_tensor")` keeps it
            owl.weight_tensor = weights
        out = score(owl, images=None, image_tensor=image_tensor, return_dict=True)
        return out, owl

    out, owl = call(torch.float16)  # faithful: an fp16 model's logits, their .half() weights
    runs["fp16"] = out["scores"].double().numpy()
    runs["fp16_weight_dtype"] = str(owl.weight_tensor.dtype)
    runs["prompt_input_ids"] = owl.input_ids[0]
    try:
        call(torch.float32)
        runs["float32_logits_half_weights"] = "ran"
    except RuntimeError as error:
        runs["float32_logits_half_weights"] = f"{type(error).__name__}: {error}"
    out, owl = call(torch.float32, torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0]))
    runs["float32"] = out["scores"].double().numpy()
    return runs


def run_scorer(
    qalign: Source, model: Model, logits: np.ndarray, ids: list[int], images: list[Image.Image]
) -> dict:
    """Q-Align's QAlignScorer: its __init__ (with load_pretrained_model stood in) and forward."""
    holder: dict[str, object] = {}

    def load_pretrained_model(pretrained, model_base, model_name, device="cuda", **_):
        image_processor = SimpleNamespace(
            image_mean=list(OPENAI_CLIP_MEAN),
            preprocess=lambda imgs, return_tensors=None: {
                "pixel_values": torch.zeros(len(imgs), 3, 1, 1)
            },
        )
        return LlamaLikeTokenizer(model.tokenizer), holder["owl"], image_processor, None

    stubs = {
        "q_align": stub("q_align"),
        "q_align.model": stub("q_align.model"),
        "q_align.model.builder": stub(
            "q_align.model.builder", load_pretrained_model=load_pretrained_model
        ),
        "q_align.evaluate": stub("q_align.evaluate"),
        "icecream": stub("icecream", ic=lambda *a: a[0] if len(a) == 1 else a),
    }
    runs: dict[str, object] = {}
    with stub_modules(stubs, only_missing=("icecream",)) as stubbed:
        try:
            qalign.module("q_align.constants", "q_align/constants.py")
            qalign.module("q_align.mm_utils", "q_align/mm_utils.py")
            scorer = qalign.module("q_align.evaluate.scorer", "q_align/evaluate/scorer.py")

            def build(dtype):
                holder["owl"] = OwlModel(torch.from_numpy(logits).to(dtype))
                instance = scorer.QAlignScorer(pretrained="<tiny>", device="cpu")
                if list(instance.preferential_ids_) != list(ids):  # their id_[1] expression
                    sys.exit(
                        f"{model.name}: QAlignScorer chose ids {instance.preferential_ids_}, "
                        f"not the word-initial {ids}"
                    )
                return instance

            instance = build(torch.float16)
            runs["fp16"] = instance(images).double().numpy()
            runs["fp16_weight_dtype"] = str(instance.weight_tensor.dtype)
            runs["prompt_input_ids"] = instance.input_ids[0].tolist()
            instance = build(torch.float32)
            try:
                instance(images)
                runs["float32_logits_half_weights"] = "ran"
            except RuntimeError as error:
                runs["float32_logits_half_weights"] = f"{type(error).__name__}: {error}"
            instance.weight_tensor = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0])
            runs["float32"] = instance(images).double().numpy()
        finally:
            for name in ("q_align.constants", "q_align.mm_utils", "q_align.evaluate.scorer"):
                sys.modules.pop(name, None)
    runs["stubbed_modules"] = stubbed
    return runs


def qalign_float64(logits: np.ndarray, ids: list[int], weights) -> np.ndarray:
    chosen = logits[:, ids].astype(np.float64)
    p = np.exp(chosen - chosen.max(1, keepdims=True))
    return (p / p.sum(1, keepdims=True)) @ np.asarray(weights, dtype=np.float64)


def run_qbench(qbench: Source, logits: np.ndarray, ids: list[int]) -> dict:
    path = "example_code_for_idefics/a3_assessment_all.py"
    softmax = qbench.definitions(path, ["softmax"], {"np": np})["softmax"]
    rows = torch.from_numpy(logits)
    pairs = [(row[ids[0]].item(), row[ids[1]].item()) for row in rows]  # as they read them
    scores = np.array([softmax(good, poor) for good, poor in pairs], dtype=np.float64)
    g = torch.tensor([p[0] for p in pairs]) / 100
    b = torch.tensor([p[1] for p in pairs]) / 100
    as_float32 = (torch.exp(g) / (torch.exp(g) + torch.exp(b))).double().numpy()
    return {
        "scores": scores,
        "float32": as_float32,
        "result_type": type(softmax(*pairs[0])).__name__,
    }


# ---- driver ------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def portable(argument: str) -> str:
    """An argument as another machine can read it: a path inside the working folder
    relative to it, any other absolute path as <its folder name> (NAME=PATH alike)."""
    name, equals, value = argument.rpartition("=")
    if not Path(value).is_absolute():
        return argument
    try:
        value = str(Path(value).relative_to(Path.cwd()))
    except ValueError:
        value = f"<{Path(value).name}>"
    return f"{name}{equals}{value}"


def command() -> str:
    """The command line as run, with portable paths (see portable)."""
    return shlex.join(portable(argument) for argument in [sys.executable, *sys.argv])


def llmiqa_state() -> dict:
    """The llmiqa commit whose model code made the logits, and whether the tree differed."""

    def git(*args):
        result = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
        return result.stdout.rstrip() if result.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": git("rev-parse", "HEAD"),
        "modified_files": status.splitlines() if status else [],
    }


def compact_json(value, indent: str = "") -> str:
    """Indented JSON with lists of scalars on one line (token ids stay short)."""
    inner = indent + " "
    if isinstance(value, dict) and value:
        items = (f"{inner}{json.dumps(k)}: {compact_json(v, inner)}" for k, v in value.items())
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(value, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in value):
        return (
            "[\n" + ",\n".join(inner + compact_json(v, inner) for v in value) + "\n" + indent + "]"
        )
    return json.dumps(value, ensure_ascii=False)


def max_abs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def generate(
    name: str,
    folder: Path,
    image_paths: list[Path],
    sources: dict,
    out: Path,
    description: str | None = None,
) -> dict:
    print(f"{name}: loading {folder}", flush=True)
    model = Model(name, folder)
    qalign_ids, qalign_pieces = word_ids(model, QALIGN_WORDS)
    check_distinct(model, QALIGN_WORDS, qalign_ids, qalign_pieces)
    qbench_ids = [qalign_ids[QALIGN_WORDS.index(w)] for w in QBENCH_WORDS]
    images = [Image.open(p).convert("RGB") for p in image_paths]
    table = model.embedding.weight.detach().float().numpy().copy()

    arrays: dict[str, np.ndarray] = {"embeddings": table}
    inputs: dict[str, list] = {}
    rendered: dict[str, str] = {}
    for protocol, spec in PROTOCOLS.items():
        rendered[protocol] = model.render(spec)
        rows, infos = zip(*(model.logits(spec, image) for image in images), strict=True)
        arrays[f"logits_{protocol}"] = np.stack(rows).astype(np.float32)
        inputs[protocol] = list(infos)
        print(f"{name}: {protocol} logits {arrays[f'logits_{protocol}'].shape}", flush=True)
    if table.shape[0] != arrays["logits_sepiqa"].shape[1]:
        sys.exit(f"{name}: embedding rows {table.shape[0]} != logits columns")

    # SeP-IQA: float32 (golden) and with a bf16 embedding table (the original's dtype).
    sep = run_sepiqa(sources["sep-iqa"], model, arrays["logits_sepiqa"], model.embedding)
    bf16_layer = torch.nn.Embedding.from_pretrained(
        model.embedding.weight.detach().to(torch.bfloat16)
    )
    sep_bf16 = run_sepiqa(sources["sep-iqa"], model, arrays["logits_sepiqa"], bf16_layer)
    positive, negative = sep["ids"]
    sep64, top = sepiqa_float64(arrays["logits_sepiqa"], table, positive, negative)
    ordered = np.sort(arrays["logits_sepiqa"], axis=1)[:, ::-1]
    k_gap = (ordered[:, 99] - ordered[:, 100]).tolist() if ordered.shape[1] > 100 else None
    torch_top = torch.topk(torch.from_numpy(arrays["logits_sepiqa"]), 100, dim=-1).indices
    same_top = bool(np.array_equal(np.sort(top, 1), np.sort(torch_top.numpy(), 1)))

    pyiqa = run_pyiqa(sources["pyiqa"], model, arrays["logits_qalign"], qalign_ids)
    scorer = run_scorer(sources["q-align"], model, arrays["logits_qalign"], qalign_ids, images)
    qbench = run_qbench(sources["q-bench"], arrays["logits_qbench"], qbench_ids)
    qalign64 = qalign_float64(arrays["logits_qalign"], qalign_ids, [5, 4, 3, 2, 1])
    scorer64 = qalign_float64(arrays["logits_qalign"], qalign_ids, [1, 0.75, 0.5, 0.25, 0])
    qbench64 = 1 / (
        1
        + np.exp(
            -(
                arrays["logits_qbench"][:, qbench_ids[0]].astype(np.float64)
                - arrays["logits_qbench"][:, qbench_ids[1]]
            )
            / 100
        )
    )

    arrays.update(
        sepiqa_positive_ids=np.asarray(positive, np.int64),
        sepiqa_negative_ids=np.asarray(negative, np.int64),
        qalign_ids=np.asarray(qalign_ids, np.int64),
        qbench_ids=np.asarray(qbench_ids, np.int64),
        sepiqa=sep["scores"],
        qalign=pyiqa["float32"],
        qalign_scorer=scorer["float32"],
        qbench=qbench["scores"],
        # references and faithful-precision runs (see the JSON's "precision")
        sepiqa_direction=sep["direction"].astype(np.float32),
        sepiqa_top_ids=top.astype(np.int64),
        sepiqa_bf16=sep_bf16["scores"],
        sepiqa_float64=sep64,
        qalign_fp16=pyiqa["fp16"],
        qalign_float64=qalign64,
        qalign_scorer_fp16=scorer["fp16"],
        qalign_scorer_float64=scorer64,
        qbench_float32=qbench["float32"],
        qbench_float64=qbench64,
    )
    precision = {
        "sepiqa": {
            "golden": "their get_embed + q_evaluate on float32 logits and the float32 "
            "embedding table",
            "faithful_bf16": "same code, embedding table cast to bf16 (v, cosines and weights in "
            "bf16 as in the original bf16 model; logits stay float32 as their modeling casts them)",
            "max_abs_bf16_minus_float32": max_abs(sep_bf16["scores"], sep["scores"]),
            "max_abs_float32_minus_float64": max_abs(sep["scores"], sep64),
            "max_abs_score": float(np.max(np.abs(sep["scores"]))),
            "top100_same_as_float64_reference": same_top,
            "min_gap_logit100_minus_logit101": min(k_gap) if k_gap else None,
            "direction_dtype_float32_run": sep["direction_dtype"],
            "direction_dtype_bf16_run": sep_bf16["direction_dtype"],
        },
        "qalign": {
            "golden": "pyiqa score() on float32 logits with weight_tensor pre-set to float32 "
            "[5,4,3,2,1] (their hasattr guard keeps it)",
            "faithful_fp16": "pyiqa score() unchanged on fp16 logits (their model is fp16 and its "
            "lm_head output is not cast): fp16 softmax @ their .half() weights, on CPU",
            "float32_logits_with_their_half_weights": pyiqa["float32_logits_half_weights"],
            "max_abs_fp16_minus_float32": max_abs(pyiqa["fp16"], pyiqa["float32"]),
            "max_abs_float32_minus_float64": max_abs(pyiqa["float32"], qalign64),
        },
        "qalign_scorer": {
            "golden": "QAlignScorer.forward on float32 logits with weight_tensor replaced by "
            "float32 [1,0.75,0.5,0.25,0] after its __init__",
            "faithful_fp16": "QAlignScorer unchanged on fp16 logits, .half() weights, on CPU",
            "float32_logits_with_their_half_weights": scorer["float32_logits_half_weights"],
            "max_abs_fp16_minus_float32": max_abs(scorer["fp16"], scorer["float32"]),
            "max_abs_float32_minus_float64": max_abs(scorer["float32"], scorer64),
        },
        "qbench": {
            "golden": "their numpy softmax(a, b, temperature=100) on .item() of float32 logits: "
            f"Python floats, so float64 arithmetic (result type {qbench['result_type']})",
            "max_abs_float32_formula_minus_golden": max_abs(qbench["float32"], qbench["scores"]),
            "max_abs_golden_minus_float64_sigmoid": max_abs(qbench["scores"], qbench64),
        },
    }

    commits = {
        key: {
            "repository": s.info["repository"],
            "commit": s.commit,
            "run": s.info["files"],
        }
        for key, s in sources.items()
    }
    meta = {
        "model": name,
        "checkpoint": folder.name,  # its making is in checkpoint_description
        "checkpoint_description": description,
        "checkpoint_files_sha256": {
            p.name: sha256(p) for p in sorted(folder.iterdir()) if p.is_file()
        },
        "model_code": "llmiqa.models.mplug_owl3 (MplugOwl3Model, MplugOwl3Processor, cut=True)"
        if model.kind == "mplug-owl3"
        else "transformers AutoModelForImageTextToText + AutoProcessor (float32, CPU)",
        "tokenizer_class": model.tokenizer_class,
        "vocab_rows": int(table.shape[0]),
        "hidden": int(table.shape[1]),
        "images": [
            {"name": p.name, "sha256": sha256(p), "size": list(Image.open(p).size)}
            for p in image_paths
        ],
        "protocols": {
            protocol: {
                "user": spec["user"],
                "assistant_prefix": spec["prefix"],
                "rendered": rendered[protocol],
                "per_image": [
                    {"image": p.name, **info}
                    for p, info in zip(image_paths, inputs[protocol], strict=True)
                ],
            }
            for protocol, spec in PROTOCOLS.items()
        },
        "words": {
            "qalign": {
                "words": list(QALIGN_WORDS),
                "ids": qalign_ids,
                "tokens_of_space_word": qalign_pieces,
                "rule": 'first token of " " + word, add_special_tokens=False',
                "weights_pyiqa": [5, 4, 3, 2, 1],
                "weights_scorer": [1, 0.75, 0.5, 0.25, 0],
            },
            "qbench": {"words": list(QBENCH_WORDS), "ids": qbench_ids, "temperature": 100},
            "sepiqa": {
                "task": SEPIQA_TASK,
                "positive": sep["words"][0],
                "negative": sep["words"][1],
                "positive_ids": positive,
                "negative_ids": negative,
                "rule": "their get_embed: model.tokenizer(words, return_tensors='pt'), mean "
                "over all tokens of the input embeddings, positive minus negative",
                "k": 100,
            },
        },
        "original_code_run": commits,
        "stand_ins": {
            "sepiqa_model": "SeP's MultimodalQualityEvaluator replaced by an object with the real "
            ".tokenizer, .LLM.get_input_embeddings() = the tiny model's real embedding layer, "
            ".eval(), .dev, and a forward(image_or_video=indices) returning logits of shape "
            "(batch, 1, vocab) = the logits computed here (their mPLUG-Owl3 7B is not run)",
            "sepiqa_dataset": "a list of (image index, dummy label) pairs; their DataLoader + "
            f"list_collate batch it; bsz = n images (one batch; see the note on q_evaluate); "
            f"batches seen: {sep['batches']}",
            "sepiqa_stubbed_imports": sep["stubbed_modules"],
            "sepiqa_q_evaluate_metrics": sep["metrics"],
            "qalign_model": "the mPLUG-Owl2 (one-align) model replaced by an object called as "
            "model(input_ids, images=...) returning {'logits': (batch, 1, vocab)} = the logits "
            "computed here with llmiqa's prompt; the input_ids their code builds from their own "
            "hard-coded prompt are recorded (prompt_input_ids) and ignored",
            "qalign_tokenizer": "their code gets the real tiny tokenizer wrapped with LLaMA's two "
            "conventions their code relies on (BOS first, here a placeholder id -1; a space "
            "before each text, SentencePiece's dummy prefix), so that QAlignScorer.__init__'s own "
            "[id_[1] for id_ in tokenizer([...])['input_ids']] yields the word-initial ids above "
            "(checked equal); pyiqa's score is given the same ids as preferential_ids_ (its "
            "__init__, which holds the identical expression, is not run)",
            "qalign_scorer_load_pretrained_model": "q_align.model.builder stubbed: returns "
            "(the wrapped tokenizer, the stand-in model, an image processor stand-in with "
            "the CLIP mean and dummy pixel_values, None)",
            "qalign_scorer_stubbed_imports": scorer["stubbed_modules"],
            "pyiqa_self": "score() executed from its source as a plain function with self = the "
            "stand-in model (device, tokenizer, preferential_ids_); image_tensor = zeros (unused)",
            "qbench_logits": "their `lgood, lpoor = output_logits[1781].item(), output_logits[6460]"
            ".item()` done with this tokenizer's ids",
        },
        "sepiqa_q_evaluate_by_products": {
            "note": "q_evaluate also scores its own Q-Bench/Q-Align variants: ids "
            "tokenizer.encode(word)[0] with no leading space, no temperature, weights 1..5 over "
            "bad..excellent, on the SeP prompt's logits. Recorded, not golden.",
            **sep["by_products"],
        },
        "pyiqa_prompt_input_ids": pyiqa["prompt_input_ids"],
        "scorer_prompt_input_ids": scorer["prompt_input_ids"],
        "precision": precision,
        "machine": machine(),
        "versions": versions(VERSIONS),
        "python": sys.version.split()[0],
        "llmiqa_code": llmiqa_state(),
        "command": command(),
    }
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / f"{name}.npz", **arrays)
    (out / f"{name}.json").write_text(compact_json(meta) + "\n")
    print(f"{name}: wrote {out / (name + '.npz')}", flush=True)
    return meta


def write_readme(out: Path, metas: list[dict]) -> None:
    rows = []
    for m in metas:
        p = m["precision"]
        rows.append(
            f"| {m['model']} | {p['sepiqa']['max_abs_bf16_minus_float32']:.3g} | "
            f"{p['sepiqa']['max_abs_float32_minus_float64']:.3g} | "
            f"{p['qalign']['max_abs_fp16_minus_float32']:.3g} | "
            f"{p['qalign']['max_abs_float32_minus_float64']:.3g} | "
            f"{p['qalign_scorer']['max_abs_fp16_minus_float32']:.3g} | "
            f"{p['qalign_scorer']['max_abs_float32_minus_float64']:.3g} | "
            f"{p['qbench']['max_abs_float32_formula_minus_golden']:.3g} | "
            f"{p['qbench']['max_abs_golden_minus_float64_sigmoid']:.3g} |"
        )
    m0 = metas[0]
    src = m0["original_code_run"]
    sources = "\n".join(
        f"- {s['repository']} @ `{s['commit']}`: "
        + "; ".join(f"`{path}` ({', '.join(names)})" for path, names in s["run"].items())
        for s in src.values()
    )
    error = m0["precision"]["qalign"]["float32_logits_with_their_half_weights"]
    columns = [
        "model",
        "SeP bf16 − f32",
        "SeP f32 − f64",
        "pyiqa fp16 − f32",
        "pyiqa f32 − f64",
        "scorer fp16 − f32",
        "scorer f32 − f64",
        "Q-Bench f32 − golden",
        "Q-Bench golden − f64",
    ]
    header = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns)
    text = README.format(
        header=header,
        command=m0["command"],
        sources=sources,
        rows="\n".join(rows),
        error=error,
        models=", ".join(
            f"`{m['model']}` ({m['model_code']}, {m['vocab_rows']} vocabulary rows)" for m in metas
        ),
        images=", ".join(f"`{i['name']}`" for i in m0["images"]),
        checkpoints="\n".join(
            f"- `{m['model']}` ({m['checkpoint']}): "
            + (m["checkpoint_description"] or "not described")
            for m in metas
        ),
    )
    (out / "README.md").write_text(text)


README = r"""# Golden outputs of the original SeP-IQA, Q-Align and Q-Bench readouts

Made by `scripts/make_readout_golden.py` (its docstring has the details), run from the
repository root as

```
{command}
```

where `<name>` is a folder of that name outside the repository: a model's checkpoint (made
as said under Checkpoints) or a git clone of an original repository (at the commits in
each JSON's `original_code_run`). Models: {models}. Images: {images}.

## Checkpoints

The checkpoints are not stored here: the logits and the embedding table are, so the readout
tests need no model. Each JSON has the checkpoint's folder and the sha256 of its files.

{checkpoints}

## Prompts

User turns as llmiqa writes them (`<image>` where the image goes), the separator between
text and image as in each original: SeP-IQA `<image>Taking into account the details and the
rationality of the image, how would you rate the quality of this image?` (its `<|image|>`
right before the text), Q-Align `How would you rate the quality of this image?\n<image>`
(its `...image?\n<|image|>`), Q-Bench `Rate the quality of the image.<image>` (IDEFICS:
text then image). The chat template with its generation prompt, then the assistant's
opening: `The quality of the image is very` (SeP-IQA) or `The quality of the image is`. For
mPLUG-Owl3 the processor's own turns (empty system turn) with the image cut (cut=True). The
JSON has each rendered text and, per image, the input ids.

## Files

`<model>.npz` (`np.load`), per model:

- `logits_sepiqa`, `logits_qalign`, `logits_qbench` (n, vocab) float32: raw logits at the
  answer position, one row per image, each with its protocol's prompt
- `embeddings` (vocab, hidden) float32: the input embedding table
- `sepiqa_positive_ids`, `sepiqa_negative_ids`: every token of SeP's positive / negative
  word string, as their `get_embed` tokenises it
- `qalign_ids` (5,): word-initial tokens of excellent, good, fair, poor, bad;
  `qbench_ids` (2,): the same for good, poor
- **golden**, (n,) each: `sepiqa` (SeP-IQA, their code, float32); `qalign` (pyiqa `score`,
  weights 5..1, their code with float32 weights); `qalign_scorer` (Q-Align `QAlignScorer`,
  weights 1..0, their code with float32 weights); `qbench` (Q-Bench
  `softmax(good, poor, temperature=100)`, their code, float64 arithmetic)
- `sepiqa_direction` (hidden,): v from their `get_embed` (float32 run);
  `sepiqa_top_ids` (n, 100): the top-100 token ids by logit, descending
- `sepiqa_bf16`, `qalign_fp16`, `qalign_scorer_fp16` (n,): their code at the original's
  precision (below)
- `sepiqa_float64`, `qalign_float64`, `qalign_scorer_float64`, `qbench_float32`,
  `qbench_float64` (n,): our evaluation of the same formula in that precision (reference)

`<model>.json`: rendered prompts (and per image the input ids), image names and hashes, the
word lists and ids as used, the original sources run (repository, commit, files, functions),
the stand-ins, the precision comparison, the machine and package versions, the command.

## What is original code, what is not

Original code, read from the repositories at these commits with `git show` and executed
(whole modules where their imports allow, otherwise the named functions from their source):

{sources}

Not original:
- the models and their logits: tiny random checkpoints run with llmiqa's model code in
  float32 on the CPU, prompts as llmiqa writes them (in the JSON). Their models (mPLUG-Owl3-7B,
  one-align, IDEFICS-9B) are not run; stand-ins hand the logits computed here to their code.
- the word ids of Q-Align / Q-Bench: the first token of " " + word. Their `id_[1]` (and
  Q-Bench's hard-coded 1781/6460) pick LLaMA's "▁word" piece after BOS; this is its
  equivalent for a tokenizer without BOS.
- for Q-Align's code, the tokenizer is the real one wrapped with LLaMA's two conventions
  their code relies on (a BOS first, a placeholder id; a space before each text, as
  SentencePiece's dummy prefix), so that their own `[id_[1] for id_ in tokenizer([...])]`
  yields the word-initial ids (checked equal).
- SeP-IQA's `q_evaluate` also computes SRCC/PLCC against labels (dummies here). Its scores
  have shape (1, batch) (v is (1, H), unsqueezed twice), so on current scipy `spearmanr` /
  `pearsonr` raise; the script runs it unchanged first and, when that fails, again with those
  two names in its namespace returning NaN. The scores are computed before and do not depend
  on them (the JSON records what happened).
- stubs for imports the readouts never use (video readers, pandas, icecream, their model
  loader), listed in the JSON.
- the `*_float64` / `qbench_float32` references.

## Precision

The originals ran bf16 (SeP-IQA's mPLUG-Owl3, Q-Bench's IDEFICS) or fp16 (Q-Align) models;
these tiny models run float32. Max absolute differences over the images of this run:

{header}
{rows}

- Q-Align: both pyiqa and scorer.py build their weights with `.half()`. With float32 logits
  their code does not run: `{error}`. Their model is fp16 and returns fp16 logits (no
  `.float()` after `lm_head`), so the faithful run casts the logits to fp16 (`*_fp16`): fp16
  softmax and fp16 matrix-vector product, here on the CPU (a GPU may round differently by one
  fp16 ulp). The golden `qalign` / `qalign_scorer` run the same code with the weights pre-set in
  float32 (pyiqa: its `if not hasattr(self, "weight_tensor")` keeps them; scorer: set after
  `__init__`); 5..1 and 1..0.25 are exact in fp16, so only the arithmetic's precision changes.
  Test llmiqa against the float32 golden to 1e-5: the fp16 results are off by fp16 rounding
  (fp16 keeps ~3 significant digits), which is the original's hardware precision, not its
  method; the float32 − float64 columns show that float32 agrees far below 1e-5.
- SeP-IQA: the original computes v, the embeddings of the top 100 and their cosines in bf16
  (the logits are float32: their modeling casts them). `sepiqa_bf16` runs their code with the
  embedding table cast to bf16; differences are bf16 rounding of the cosines (up to ~1e-2
  relative). The logits of a bf16 model would differ too; that is not reproduced here.
  The golden `sepiqa` is their code in float32; test against it. Scores are sums of 100
  logit-weighted cosines: here |score| stays below `max_abs_score` in the JSON (under 1) and
  an absolute 1e-5 is ample (the float32 − float64 column is the floor of what float32 can
  agree to); with real logits (tens) scores reach hundreds and need a relative tolerance.
  The top-100 set is checked against float64 sorting, and the smallest gap between the
  100th and 101st logit is recorded.
- Q-Bench: the original takes `.item()` (a Python float) and computes in numpy float64; the
  golden is exactly that, from float32 logits.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, metavar="NAME=FOLDER")
    parser.add_argument("--images", nargs="+", required=True, type=Path)
    parser.add_argument("--sep-iqa", required=True, type=Path)
    parser.add_argument(
        "--q-align",
        nargs="+",
        required=True,
        type=Path,
        help="the Q-Align and the pyiqa (IQA-PyTorch) git dirs",
    )
    parser.add_argument("--q-bench", required=True, type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "golden" / "readouts")
    parser.add_argument(
        "--describe",
        action="append",
        default=[],
        metavar="NAME=TEXT",
        help="how checkpoint NAME was made (goes into its JSON and the README)",
    )
    args = parser.parse_args()

    sources = {
        "sep-iqa": Source("sep-iqa", args.sep_iqa),
        "q-bench": Source("q-bench", args.q_bench),
    }
    for folder in args.q_align:
        git = git_dir(folder)
        for key in ("q-align", "pyiqa"):
            info = SOURCES[key]
            if has_file(git, info["commit"], next(iter(info["files"]))):
                sources[key] = Source(key, folder)
    for key in ("q-align", "pyiqa"):
        if key not in sources:
            sys.exit(
                f"--q-align: no git dir holds {SOURCES[key]['repository']} at "
                f"{SOURCES[key]['commit']}; give both Q-Align and pyiqa"
            )
    models = []
    for item in args.model:
        name, sep, folder = item.partition("=")
        if not sep or not name or not Path(folder).is_dir():
            sys.exit(f"--model {item}: give NAME=FOLDER with an existing folder")
        models.append((name, Path(folder)))
    described = dict(item.partition("=")[::2] for item in args.describe)
    unknown = set(described) - {name for name, _ in models}
    if unknown:
        sys.exit(f"--describe: no --model named {', '.join(sorted(unknown))}")
    torch.set_grad_enabled(False)
    metas = [
        generate(name, folder, args.images, sources, args.out, described.get(name))
        for name, folder in models
    ]
    write_readme(args.out, metas)


if __name__ == "__main__":
    main()
