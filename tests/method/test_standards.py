"""Quality standards: the paper's wording and the released code's, character for character."""

import pytest

from llmiqa.method.standards import ANSWER_WORDS, IMAGE, KINDS, LEVELS, QUESTIONS, Prompt, Standard

PAPER_SYSTEM = (
    "You are a helpful assistant to evaluate image quality. You will be given standards for "
    "each quality level. The quality standard is listed as follows: 7: Perfect, 6: Excellent, "
    "5: Good, 4: Fair, 3: Bad, 2: Poor, 1: Very Bad. The higher the image quality is, the "
    "higher the score should be."
)
PAPER_USER = "Please evaluate the quality of the image and score in [1, 2, 3, 4, 5, 6, 7]."

# The released code's user turn for K = 7 words (eval.py + words_systems_queries.py),
# written out by hand: a leading space, the indented continuation lines of an f-string
# (20 spaces for the whole image, 24 inside the region loop), no system turn.
DOGIQA_SYSTEM_7 = (
    "You are a helpful assistant to help me evaluate the quality of the image. You will be "
    "given standards about each quality level. The quality standard is list as follows:\n"
    "7: Perfect!\n6: Excellent!\n5: Good!\n4: Fair!\n3: Bad!\n2: Poor!\n1: Very Bad!\n\n"
    + " " * 20
    + "The higher the image quality, the higher the score should be.\n"
    + " " * 20
    + "Please strictly follow the USER's format, otherwise the result will be invalid."
)
DOGIQA_QUERY = (
    "Please evaluate the quality of the image and score in quality. Only tell me the number. "
    "Do not analysis the image."
)


def test_default_is_the_papers_word_standard_verbatim():
    prompt = Standard().prompt()
    assert prompt.system == PAPER_SYSTEM
    assert prompt.user == f"{IMAGE}\n{PAPER_USER}"
    assert Standard().prompt("region") == prompt  # the paper rates regions the same way


@pytest.mark.parametrize(("view", "indent"), [("whole", 20), ("region", 24)])
def test_dogiqa_wording_is_the_released_code_including_its_whitespace(view, indent):
    prompt = Standard("word", 7, "dogiqa").prompt(view)
    pad = " " * indent
    assert prompt.system is None
    assert prompt.user == f" {DOGIQA_SYSTEM_7}\n{pad}{IMAGE}\n{pad}{DOGIQA_QUERY}"


def test_dogiqa_word_lists_are_the_released_ones():
    lines = Standard("word", 3, "dogiqa").prompt().user.splitlines()
    assert lines[1:4] == ["3: Excellent!", "2: Fair!", "1: Poor!"]
    nine = Standard("word", 9, "dogiqa").descriptions
    assert nine == ("Perfect!", "Excellent!", "Very Good!", "Good!", "Fair!", "Bad!", "Poor!",
                    "Awful!", "Very Bad!")  # fmt: skip


def test_dogiqa_sentence_and_number_standards():
    sentence = Standard("sentence", 5, "dogiqa").prompt().user
    assert "5: Excellent! The overall quality of the image is extremely excellent" in sentence
    assert sentence.endswith(
        "score in [1,2,3,4,5]. Only tell me the number. Do not analysis the image."
    )
    number = Standard("number", 7, "dogiqa").prompt().user
    assert "standard" not in number and number.endswith(
        "please evaluate the quality of the image and score in [1,2,3,4,5,6,7]. Only tell me "
        "the number. Do not analysis the image."
    )
    with pytest.raises(ValueError, match="defined for K in"):
        Standard("sentence", 3, "dogiqa")


@pytest.mark.parametrize("kind", [kind for kind in KINDS if kind not in QUESTIONS])
@pytest.mark.parametrize("levels", LEVELS)
def test_every_level_is_described_best_first(kind, levels):
    prompt = Standard(kind, levels).prompt()
    assert prompt.user.endswith(f"[{', '.join(map(str, range(1, levels + 1)))}].")
    if kind == "number":
        assert Standard(kind, levels).descriptions == ()
        assert "standard" not in prompt.system
        return
    descriptions = Standard(kind, levels).descriptions
    assert len(set(descriptions)) == levels
    positions = [
        prompt.system.index(f"{k}: {d}")
        for k, d in zip(range(levels, 0, -1), descriptions, strict=True)
    ]
    assert positions == sorted(positions)


def test_sentences_replace_words_one_for_one():
    words, sentences = Standard("word", 5), Standard("sentence", 5)
    for word, sentence in zip(words.descriptions, sentences.descriptions, strict=True):
        assert word.lower() in sentence.lower()


@pytest.mark.parametrize(
    ("kind", "levels", "wording"),
    [("word", 4, "paper"), ("sentence", 11, "paper"), ("number", 10, "paper"),
     ("stars", 5, "paper"), ("word", 7, "mine")],
)  # fmt: skip
def test_undefined_standards_are_refused(kind, levels, wording):
    with pytest.raises(ValueError):
        Standard(kind, levels, wording)


def test_number_standard_takes_any_single_digit_scale():
    assert Standard("number", 2).prompt().user.endswith("[1, 2].")
    assert Standard("number", 4).prompt().user.endswith("[1, 2, 3, 4].")


def test_a_prompt_places_its_image_once_and_can_merge_its_system_turn():
    prompt = Standard().prompt()
    assert (prompt.before_image, prompt.after_image) == ("", f"\n{PAPER_USER}")
    merged = prompt.merged()
    assert merged.system is None and merged.user == f"{PAPER_SYSTEM}\n{IMAGE}\n{PAPER_USER}"
    with pytest.raises(ValueError, match="exactly once"):
        Prompt(None, "no image here")


@pytest.mark.parametrize("kind", QUESTIONS)
def test_other_protocols_ask_their_own_question_and_open_the_answer(kind):
    """SeP-IQA, Q-Align and Q-Bench: no standard, no system turn, the answer opened, and
    the five answer words read (worst first), for the whole image and regions alike."""
    question = Standard(kind, 5)
    prompt = question.prompt("whole")
    assert prompt.system is None and prompt == question.prompt("region")
    assert prompt.answer.startswith("The quality of the image is")
    assert question.words == ANSWER_WORDS and question.top_logits == 100
    assert Standard().words == () and Standard().top_logits == 0
    assert prompt.text.endswith(prompt.answer)  # the opened answer is part of the key
    with pytest.raises(ValueError, match="--levels 5"):
        Standard(kind, 7)


def test_the_questions_keep_their_originals_order_of_text_and_image():
    assert Standard("sepiqa", 5).prompt().user.startswith(IMAGE + "Taking into account")
    assert Standard("qalign", 5).prompt().user.endswith("image?\n" + IMAGE)
    assert Standard("qbench", 5).prompt().user == "Rate the quality of the image." + IMAGE
