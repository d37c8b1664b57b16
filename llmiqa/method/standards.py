"""Quality standards and the prompts that carry them: what the MLLM is told each level means.

Two wordings exist. "paper" is the paper's text (Section 3.1): the standard as a system
turn, then the image and "Please evaluate ... score in [1, ..., K]." as the user turn. Only
its K = 7 word standard is printed in the paper; every other (kind, K) of this wording is
ours, built from one vocabulary so the ablations compare like with like. "dogiqa" is the
authors' released evaluation code (sjtuzzq/Dog-IQA, branch zzq, words_systems_queries.py
and eval.py), character for character: one user turn, no system turn, and a prompt that
differs between the whole image and the regions by four spaces of indentation.

Levels are listed from best to worst, as in both sources.

The other training-free protocols ask their own question and open the answer themselves
(SeP-IQA, weolix/SeP-IQA models.py; Q-Align, Q-Future/Q-Align scorer.py and pyiqa; Q-Bench
A3, Q-Future/Q-Bench): no standard, and the answer is read at the next word, over the five
ANSWER_WORDS. Each keeps its original's order of text and image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmiqa.settings import option

# Other training-free protocols' questions: no standard, read out through answer words.
QUESTIONS = ("sepiqa", "qalign", "qbench")
KINDS = ("number", "word", "sentence", *QUESTIONS)
# Their answer words, worst first: level k is the token that starts the k-th word (with
# its leading space) right after the opened answer.
ANSWER_WORDS = ("bad", "poor", "fair", "good", "excellent")
LEVELS = (3, 5, 7, 9)
WORDINGS = ("paper", "dogiqa")
VIEWS = ("whole", "region")
IMAGE = "<image>"  # where the image goes in a user turn; each backend substitutes its own

# ---- the paper's wording -----------------------------------------------------------------

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

# ---- other protocols' questions: (user turn, opened answer) -------------------------------

_QUESTION_PROMPTS: dict[str, tuple[str, str]] = {
    "sepiqa": (
        f"{IMAGE}Taking into account the details and the rationality of the image, how would "
        "you rate the quality of this image?",
        "The quality of the image is very",
    ),
    "qalign": (
        f"How would you rate the quality of this image?\n{IMAGE}",
        "The quality of the image is",
    ),
    "qbench": (f"Rate the quality of the image.{IMAGE}", "The quality of the image is"),
}

# SeP-IQA's word lists (task "IQA" of its evaluation_utils.get_embed), verbatim: one string
# each, leading space and doubled "poor" included. Its direction is the mean input embedding
# of every token of the first minus that of the second.
SEP_IQA_WORDS = (
    " perfect superb outstanding excellent fantastic stunning striking phenomenal brilliant "
    "magnificent amazing remarkable beautiful awesome breathtaking great good decent fine sharp "
    "clear suitable vibrant rich vivid bright colorful",
    " bad terrible awful poor poor horrible disappointing unacceptable inadequate deficient "
    "blurry fuzzy compromised chaotic distorted weak mediocre sub lacking unclear dark noisy "
    "low problematic insufficient",
)

# ---- the released code's wording (strings as in words_systems_queries.py) ---------------

# Its word lists per K, best first; each line of the standard reads "k: Word!".
DOGIQA_WORDS: dict[int, tuple[str, ...]] = {
    3: ("Excellent", "Fair", "Poor"),
    5: ("Excellent", "Good", "Fair", "Bad", "Poor"),
    7: ("Perfect", "Excellent", "Good", "Fair", "Bad", "Poor", "Very Bad"),
    9: ("Perfect", "Excellent", "Very Good", "Good", "Fair", "Bad", "Poor", "Awful", "Very Bad"),
}
# Its sentence standards: `assess_standard_quality_sentence` (K = 5, the one its code
# uses) and `assess_standard_quality_sentence_7` (defined there, unused).
DOGIQA_SENTENCES: dict[int, tuple[str, ...]] = {
    5: (
        "Excellent! The overall quality of the image is extremely excellent, and all aspects "
        "are perfect.",
        "Good! The overall quality of the image is good, and it is satisfactory in many aspects.",
        "Fair! The overall quality of the image is fair. There are certain merits but also some "
        "deficiencies.",
        "Poor! The overall quality of the image is poor, with obvious defects.",
        "Bad! The overall quality of the image is bad and hard to accept.",
    ),
    7: (
        "Perfect! The overall quality of the image is unparalleled, with every detail meeting "
        "the highest standards.",
        "Excellent! The overall quality of the image is excellent, with all aspects being "
        "exemplary and without flaw.",
        "Good! The overall quality of the image is good, and it is satisfactory in many aspects.",
        "Fair! The overall quality of the image is fair. There are certain merits but also some "
        "deficiencies.",
        "Bad! The overall quality of the image is bad, with noticeable shortcomings.",
        "Poor! The overall quality of the image is poor, with obvious defects.",
        "Very Bad! The overall quality of the image is very bad and hard to accept.",
    ),
}
_DOGIQA_HELP = "You are a helpful assistant to help me evaluate the quality of the image."
_DOGIQA_FORMAT = "Please strictly follow the USER's format, otherwise the result will be invalid."
_DOGIQA_ONLY = "Only tell me the number. Do not analysis the image."
# eval.py builds the user turn as an indented f-string: continuation lines carry the
# source's indentation, 20 spaces for the whole image and 24 inside the region loop.
_DOGIQA_INDENT = {"whole": " " * 20, "region": " " * 24}
_DOGIQA_SOURCE_INDENT = " " * 20  # inside the system strings of words_systems_queries.py


@dataclass(frozen=True)
class Prompt:
    """What the model reads for one sub-image, before its answer: plain data.

    `user` holds IMAGE exactly once, where the image goes. The store keys ratings by
    these texts, so they are known without loading any model.
    """

    system: str | None  # a system turn; None: no system turn at all
    user: str
    answer: str = ""  # the assistant turn's opening, continued by the answer read

    def __post_init__(self) -> None:
        if self.user.count(IMAGE) != 1:
            raise ValueError(f"a prompt's user turn needs {IMAGE} exactly once")

    @property
    def before_image(self) -> str:
        return self.user.split(IMAGE)[0]

    @property
    def after_image(self) -> str:
        return self.user.split(IMAGE)[1]

    @property
    def text(self) -> str:
        """Every turn as one string, told apart (what the store keys ratings by)."""
        text = self.user if self.system is None else f"{self.system}\x1e{self.user}"
        return f"{text}\x1e\x1e{self.answer}" if self.answer else text

    def merged(self) -> Prompt:
        """The same text as one user turn, for chat templates that have no system role."""
        if self.system is None:
            return self
        return Prompt(None, f"{self.system}\n{self.user}", self.answer)


@dataclass(frozen=True)
class Standard:
    """A quality standard: how levels are described (kind), how many (K), whose wording."""

    kind: str = field(
        default="word",
        metadata=option(
            "how levels are described: number (no description), word or sentence; or "
            "another protocol's question, answered in words (sepiqa, qalign, qbench)",
            choices=KINDS,
        ),
    )
    levels: int = field(
        default=7,
        metadata=option(
            "number of levels K (word/sentence: 3, 5, 7, 9; number: 2..9; questions: 5)"
        ),
    )
    wording: str = field(
        default="paper",
        metadata=option(
            "whose prompt text: the paper's, or the released code's (dogiqa)", choices=WORDINGS
        ),
    )
    top: int = field(
        default=100,
        metadata=option(
            "questions: raw logits kept per view, the N most probable tokens (SeP-IQA's sum)"
        ),
    )

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown standard kind {self.kind!r}; choose one of {KINDS}")
        if self.wording not in WORDINGS:
            raise ValueError(f"unknown wording {self.wording!r}; choose one of {WORDINGS}")
        defined = self.defined_levels(self.kind, self.wording)
        if self.kind in QUESTIONS and self.levels not in defined:
            raise ValueError(
                f"levels (--levels) {self.levels}: the {self.kind} question is answered over "
                f"the {len(ANSWER_WORDS)} words {', '.join(ANSWER_WORDS)} (--levels 5, or "
                f"--preset {self.kind})"
            )
        if self.top < 1:
            raise ValueError(f"top (--top) must be at least 1, got {self.top}")
        if self.levels not in defined:
            other = "" if self.kind == "number" else "; the number standard (--kind number) "
            raise ValueError(
                f"levels (--levels) {self.levels}: the {self.wording} {self.kind} standard is "
                f"defined for K in {list(defined)}"
                + (f"{other}takes any K from 2 to 9" if other else "")
            )

    @staticmethod
    def defined_levels(kind: str, wording: str = "paper") -> tuple[int, ...]:
        """The K each (kind, wording) describes; the number standard takes any digit scale."""
        if kind == "number":
            return tuple(range(2, 10))
        if kind in QUESTIONS:
            return (len(ANSWER_WORDS),)
        if wording == "dogiqa" and kind == "sentence":
            return tuple(DOGIQA_SENTENCES)
        return LEVELS

    @property
    def descriptions(self) -> tuple[str, ...]:
        """Level descriptions, best (K) first; empty for the number standard."""
        if self.kind == "number":
            return ()
        if self.kind in QUESTIONS:
            return tuple(reversed(ANSWER_WORDS))
        if self.wording == "dogiqa":
            if self.kind == "sentence":
                return DOGIQA_SENTENCES[self.levels]
            return tuple(f"{word}!" for word in DOGIQA_WORDS[self.levels])
        words = WORDS[self.levels]
        return words if self.kind == "word" else tuple(SENTENCES[w] for w in words)

    def prompt(self, view: str = "whole") -> Prompt:
        """The prompt for the whole image or for a region (only dogiqa tells them apart)."""
        if view not in VIEWS:
            raise ValueError(f"unknown view {view!r}; choose one of {VIEWS}")
        if self.kind in QUESTIONS:
            return Prompt(None, *_QUESTION_PROMPTS[self.kind])
        if self.wording == "dogiqa":
            return self._dogiqa_prompt(view)
        scores = ", ".join(str(k) for k in range(1, self.levels + 1))
        user = f"{IMAGE}\nPlease evaluate the quality of the image and score in [{scores}]."
        return Prompt(self._paper_system(), user)

    def _paper_system(self) -> str:
        if self.kind == "number":
            return f"{_INTRO} {_OUTRO}"
        pairs = [f"{self.levels - i}: {d}" for i, d in enumerate(self.descriptions)]
        listed = ", ".join(pairs) + "." if self.kind == "word" else " ".join(pairs)
        return f"{_INTRO} {_GIVEN} {listed} {_OUTRO}"

    def _dogiqa_prompt(self, view: str) -> Prompt:
        """eval.py: f" {system}\\n<indent><|image|>\\n<indent>{query}", one user turn."""
        pad = _DOGIQA_SOURCE_INDENT
        scores = str(list(range(1, self.levels + 1))).replace(" ", "")
        listed = (
            "".join(f"\n{self.levels - i}: {d}" for i, d in enumerate(self.descriptions)) + "\n"
        )  # the standards are triple-quoted strings that start and end on a newline
        if self.kind == "number":
            # words_systems_queries.py hard-codes [1,...,7] here; we list the run's K.
            system = f"{_DOGIQA_HELP} \n{pad}{_DOGIQA_FORMAT}"
            query = (
                f"please evaluate the quality of the image and score in {scores}. {_DOGIQA_ONLY}"
            )
        elif self.kind == "word":
            system = (
                f"{_DOGIQA_HELP} You will be given standards about each quality level. "
                f"The quality standard is list as follows:{listed}\n"
                f"{pad}The higher the image quality, the higher the score should be.\n"
                f"{pad}{_DOGIQA_FORMAT}"
            )
            query = "Please evaluate the quality of the image and score in quality. " + _DOGIQA_ONLY
        else:
            # The released code formats `{assess_word}` here without defining it (a
            # NameError); its dimension list names "quality", the only reading that runs.
            system = (
                f"{_DOGIQA_HELP} You will be given standards about each quality level. "
                f"The quality standard is list as follows:\n{pad}{listed}\n{pad}{_DOGIQA_FORMAT}"
            )
            query = (
                f"please evaluate the quality of the image and score in {scores}. {_DOGIQA_ONLY}"
            )
        indent = _DOGIQA_INDENT[view]
        return Prompt(None, f" {system}\n{indent}{IMAGE}\n{indent}{query}")

    @property
    def words(self) -> tuple[str, ...]:
        """The answer words read, worst first (questions), or () for digits 1..K."""
        return ANSWER_WORDS if self.kind in QUESTIONS else ()

    @property
    def top_logits(self) -> int:
        """Raw logits kept per view: the question's top N, none for a digit answer."""
        return self.top if self.kind in QUESTIONS else 0

    def __str__(self) -> str:
        if self.kind in QUESTIONS:
            return self.kind
        suffix = "" if self.wording == "paper" else f"-{self.wording}"
        return f"{self.kind}-{self.levels}{suffix}"
