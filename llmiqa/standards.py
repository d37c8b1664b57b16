"""Quality standards: what the MLLM is told each score level means.

The paper gives only its K = 7 word standard; every other (kind, K) below is ours, built
from one vocabulary so the ablations compare like with like. Levels are listed from best
to worst, as in the paper's prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("number", "word", "sentence")
LEVELS = (3, 5, 7, 9)

# Words per K, best first. K = 7 is the paper's, verbatim; K = 9 extends it with
# "Very Good" and "Mediocre"; K = 5 and K = 3 keep the usual five / three-level scales.
WORDS: dict[int, tuple[str, ...]] = {
    3: ("Good", "Fair", "Bad"),
    5: ("Excellent", "Good", "Fair", "Poor", "Bad"),
    7: ("Perfect", "Excellent", "Good", "Fair", "Bad", "Poor", "Very Bad"),
    9: ("Perfect", "Excellent", "Very Good", "Good", "Fair", "Mediocre", "Bad", "Poor", "Very Bad"),
}

# One sentence per word: the "sentence" standard replaces each word by its sentence.
SENTENCES: dict[str, str] = {
    "Perfect": "The image is perfect, with no visible distortion and flawless detail.",
    "Excellent": "The image is excellent, sharp and clean, with at most imperceptible flaws.",
    "Very Good": "The image is very good, with tiny flaws visible only on close inspection.",
    "Good": "The image is good, with minor flaws that do not disturb viewing.",
    "Fair": "The image is fair, with noticeable flaws that somewhat disturb viewing.",
    "Mediocre": "The image is mediocre, with clear flaws in several areas.",
    "Bad": "The image is bad, with obvious distortions that clearly disturb viewing.",
    "Poor": "The image is poor, with severe distortions and little usable detail.",
    "Very Bad": "The image is very bad, with extreme distortions that hide the content.",
}

_INTRO = "You are a helpful assistant to evaluate image quality."
_GIVEN = (
    "You will be given standards for each quality level. The quality standard is listed as follows:"
)
_OUTRO = "The higher the image quality is, the higher the score should be."


@dataclass(frozen=True)
class Standard:
    """A quality standard: kind of level description and number of levels K."""

    kind: str = "word"
    levels: int = 7

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown standard kind {self.kind!r}; choose one of {KINDS}")
        if self.kind == "number":
            if not 2 <= self.levels <= 9:
                raise ValueError(f"the number standard needs 2 <= K <= 9, got {self.levels}")
        elif self.levels not in WORDS:
            raise ValueError(
                f"the {self.kind} standard is defined for K in {sorted(WORDS)}, got {self.levels}"
            )

    @property
    def descriptions(self) -> tuple[str, ...]:
        """Level descriptions, best (K) first; empty for the number standard."""
        if self.kind == "number":
            return ()
        words = WORDS[self.levels]
        return words if self.kind == "word" else tuple(SENTENCES[w] for w in words)

    def system_prompt(self) -> str:
        if self.kind == "number":
            return f"{_INTRO} {_OUTRO}"
        pairs = [f"{self.levels - i}: {d}" for i, d in enumerate(self.descriptions)]
        listed = ", ".join(pairs) + "." if self.kind == "word" else " ".join(pairs)
        return f"{_INTRO} {_GIVEN} {listed} {_OUTRO}"

    def user_prompt(self) -> str:
        scores = ", ".join(str(k) for k in range(1, self.levels + 1))
        return f"Please evaluate the quality of the image and score in [{scores}]."

    def __str__(self) -> str:
        return f"{self.kind}-{self.levels}"
