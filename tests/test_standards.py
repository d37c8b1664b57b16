import pytest

from llmiqa.standards import KINDS, LEVELS, Standard

PAPER_SYSTEM = (
    "You are a helpful assistant to evaluate image quality. You will be given standards for "
    "each quality level. The quality standard is listed as follows: 7: Perfect, 6: Excellent, "
    "5: Good, 4: Fair, 3: Bad, 2: Poor, 1: Very Bad. The higher the image quality is, the "
    "higher the score should be."
)
PAPER_USER = "Please evaluate the quality of the image and score in [1, 2, 3, 4, 5, 6, 7]."


def test_default_is_the_papers_word_standard_verbatim():
    standard = Standard()
    assert (standard.kind, standard.levels) == ("word", 7)
    assert standard.system_prompt() == PAPER_SYSTEM
    assert standard.user_prompt() == PAPER_USER


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("levels", LEVELS)
def test_every_level_is_described_best_first(kind, levels):
    standard = Standard(kind, levels)
    system = standard.system_prompt()
    assert standard.user_prompt().endswith(f"[{', '.join(map(str, range(1, levels + 1)))}].")
    if kind == "number":
        assert standard.descriptions == ()
        assert "standard" not in system
        return
    assert len(standard.descriptions) == levels
    assert len(set(standard.descriptions)) == levels
    positions = [
        system.index(f"{k}: {d}")
        for k, d in zip(range(levels, 0, -1), standard.descriptions, strict=True)
    ]
    assert positions == sorted(positions)


def test_sentences_replace_words_one_for_one():
    words, sentences = Standard("word", 5), Standard("sentence", 5)
    for word, sentence in zip(words.descriptions, sentences.descriptions, strict=True):
        assert word.lower() in sentence.lower()


@pytest.mark.parametrize(
    ("kind", "levels"), [("word", 4), ("sentence", 11), ("number", 10), ("stars", 5)]
)
def test_undefined_standards_are_refused(kind, levels):
    with pytest.raises(ValueError):
        Standard(kind, levels)


def test_number_standard_takes_any_single_digit_scale():
    assert Standard("number", 4).user_prompt().endswith("[1, 2, 3, 4].")
