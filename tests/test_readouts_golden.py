"""SeP-IQA, Q-Align and Q-Bench as their original code computes them: golden outputs of
that code (tests/golden/readouts, made by scripts/make_readout_golden.py from the logits
and embedding tables of a tiny Qwen2-VL and a tiny mPLUG-Owl3) against llmiqa's path from
the same logits: what a rater keeps (answer log-probabilities, top raw logits), SeP-IQA's
token weights, and the registered readouts.

The comparison covers the readouts, not the models: the logits are the golden ones. The
tolerance, 1e-5, is what float32 arithmetic leaves (their code in float32 against a
float64 evaluation of the same formulas differs by at most 4e-7 here, see the README
there); every golden value is that code's own output, none is ours.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from llmiqa.method.aggregate import RatingArrays
from llmiqa.raters.local import direction_cosines, ratings_from_logits

GOLDEN = Path(__file__).resolve().parent / "golden" / "readouts"
TOLERANCE = 1e-5


class Tokenizer:
    """decode() only: what ratings_from_logits asks of a tokenizer (the greedy other
    token's text, which no readout here reads)."""

    def decode(self, ids) -> str:
        return "x"


def arrays(golden, protocol: str, top: int = 0, weights=None) -> RatingArrays:
    """What llmiqa keeps of each image's logits, as one run's arrays (whole image only)."""
    logits = torch.as_tensor(golden[f"logits_{protocol}"])
    words = golden["qalign_ids"][::-1]  # excellent..bad -> level order, worst first
    ratings = ratings_from_logits(logits, [words] * len(logits), [top] * len(logits), Tokenizer())
    n = len(ratings)
    kept = {}
    if top:
        kept = dict(
            top_logits=np.stack([r.top_logits for r in ratings]).reshape(n, 1, 1, top),
            top_weights=np.stack([weights[r.top_ids] for r in ratings]).reshape(n, 1, 1, top),
        )
    return RatingArrays(
        np.stack([r.logprobs for r in ratings]).reshape(n, 1, 1, 5),
        np.array([r.other_logprob for r in ratings]).reshape(n, 1, 1),
        np.full((n, 1, 1), np.nan), np.zeros((n, 0)), np.zeros((n, 0), bool),
        np.zeros((n, 0), bool), np.array(["bad", "poor", "fair", "good", "excellent"]), **kept,
    )  # fmt: skip


@pytest.fixture(params=["qwen2-vl-tiny", "mplug-owl3-tiny"])
def golden(request):
    return np.load(GOLDEN / f"{request.param}.npz")


def test_sep_iqa_equals_the_original_code(golden):
    weights = direction_cosines(
        torch.as_tensor(golden["embeddings"]),
        golden["sepiqa_positive_ids"],
        golden["sepiqa_negative_ids"],
    )
    ours = arrays(golden, "sepiqa", top=100, weights=weights).readout("sepiqa")[:, 0, 0]
    np.testing.assert_allclose(ours, golden["sepiqa"], atol=TOLERANCE, rtol=0)


def test_q_align_equals_pyiqa_and_the_q_align_scorer(golden):
    ours = arrays(golden, "qalign").readout("qalign")[:, 0, 0]
    np.testing.assert_allclose(ours, golden["qalign"], atol=TOLERANCE, rtol=0)  # weights 5..1
    np.testing.assert_allclose((ours - 1) / 4, golden["qalign_scorer"], atol=TOLERANCE, rtol=0)


def test_q_bench_equals_the_original_code(golden):
    ours = arrays(golden, "qbench").readout("qbench")[:, 0, 0]
    np.testing.assert_allclose(ours, golden["qbench"], atol=TOLERANCE, rtol=0)


def test_the_goldens_tell_a_wrong_readout_apart(golden):
    """The margin matters: swapping two answer words, or dropping the 1/100 temperature,
    moves every readout far beyond the tolerance on these logits."""
    swapped = arrays(golden, "qalign")
    swapped.logprobs[..., [3, 4]] = swapped.logprobs[..., [4, 3]]
    assert np.abs(swapped.readout("qalign")[:, 0, 0] - golden["qalign"]).max() > 100 * TOLERANCE
    gap = np.diff(arrays(golden, "qbench").logprobs[:, 0, 0, [1, 3]], axis=-1)[:, 0]
    assert np.abs(1 / (1 + np.exp(-gap)) - golden["qbench"]).max() > 100 * TOLERANCE
