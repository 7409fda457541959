"""Answer scoring, case by case.

EM / F1 / substring EM tables hold what the official scorers return on each case — SQuAD v1.1's
``evaluate-v1.1.py``, HotpotQA's ``hotpot_evaluate_v1.py``, Router-R1's ``verl/utils/reward_score/qa_em.py``
— written out literally (worked out from their code: lowercase, drop ASCII ``string.punctuation``, articles
→ space, collapse whitespace; F1 is 0 when no token is shared). F1 values are compared with ``==``: the
default must be bit-identical to the official arithmetic. The lenient ``unicode`` variant has its own tables.
"""

from __future__ import annotations

import pytest

from graphs import answers
from graphs.answers import (
    choice_letter,
    choice_match,
    exact_match,
    final_number,
    normalize_answer,
    numeric_match,
    substring_match,
    token_f1,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Beatles", "beatles"),  # lowercased, leading article dropped
        ("a Tale of an Apple", "tale of apple"),  # 'a' and 'an' dropped, 'of' kept
        ("Anthem", "anthem"),  # 'an' inside a word is not an article
        ("Hello, world!", "hello world"),  # ASCII punctuation removed
        ("U.S.", "us"),  # ASCII periods removed, no space left behind
        ("don't", "dont"),  # ASCII apostrophe removed
        ("rock 'n' roll", "rock n roll"),  # ASCII quotes removed
        ("1914-1918", "19141918"),  # ASCII hyphen removed, not turned into a space
        ("The-End", "theend"),  # punctuation goes before articles: 'theend' has no article left
        ("«Paris»", "«paris»"),  # guillemets are not in string.punctuation: kept
        ("Paris。", "paris。"),  # ideographic full stop kept
        ("“Paris”", "“paris”"),  # curly double quotes kept
        ("rock ’n’ roll", "rock ’n’ roll"),  # curly apostrophes kept
        ("1914–1918", "1914–1918"),  # en dash kept
        ("rock—and—roll", "rock—and—roll"),  # em dash kept
        ("¿Qué?", "¿qué"),  # ASCII '?' removed, inverted '¿' kept
        ("Cafe\u0301", "cafe\u0301"),  # no NFKC: e + combining acute stays two characters
        ("１２３", "１２３"),  # no NFKC: fullwidth digits stay fullwidth
        ("ﬁsh", "ﬁsh"),  # no NFKC: the fi ligature stays
        ("x²", "x²"),  # no NFKC: superscript two stays
        ("İstanbul", "i\u0307stanbul"),  # str.lower(): dotted capital I becomes i + combining dot
        ("  new\tYORK \n city ", "new york city"),  # case folded, whitespace collapsed
        ("\u3000Tokyo\u3000", "tokyo"),  # str.split() treats the ideographic space as whitespace
        ("", ""),  # empty stays empty
        ("The a an", ""),  # only articles: nothing left
    ],
)
def test_normalize_answer_official(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected
    assert normalize_answer(text, "official") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Beatles", "beatles"),  # the official steps still apply
        ("«Paris»", "paris"),  # Unicode punctuation (Pi/Pf) removed
        ("Paris。", "paris"),  # ideographic full stop (Po) removed
        ("rock ’n’ roll", "rock n roll"),  # curly apostrophes (Pf) removed
        ("1914–1918", "19141918"),  # en dash (Pd) removed, not turned into a space
        ("rock—and—roll", "rockandroll"),  # em dash (Pd) removed
        ("¿Qué?", "qué"),  # inverted question mark (Po) removed
        ("Cafe\u0301", "café"),  # NFKC composes e + combining acute into é
        ("１２３", "123"),  # NFKC folds fullwidth digits to ASCII
        ("ﬁsh", "fish"),  # NFKC expands the fi ligature
        ("x²", "x2"),  # NFKC folds superscript two
        ("The a an", ""),  # only articles: nothing left
    ],
)
def test_normalize_answer_unicode(text: str, expected: str) -> None:
    assert normalize_answer(text, "unicode") == expected


def test_unknown_variants_are_refused() -> None:
    with pytest.raises(ValueError, match="official, unicode"):
        normalize_answer("x", "nfkc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="squad"):
        token_f1("x", ["x"], rule="triviaqa")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("prediction", "golds", "official", "lenient"),
    [
        ("The Beatles", ["beatles"], 1.0, 1.0),  # 'beatles' == 'beatles'
        ("Paris!", ["paris"], 1.0, 1.0),  # ASCII punctuation and case ignored
        ('"Paris"', ["Paris"], 1.0, 1.0),  # ASCII double quotes removed
        ("U.S.", ["US"], 1.0, 1.0),  # 'us' == 'us'
        ("«Paris»", ["Paris"], 0.0, 1.0),  # '«paris»' != 'paris'; lenient drops the guillemets
        ("Paris。", ["Paris"], 0.0, 1.0),  # 'paris。' != 'paris'
        ("“Paris”", ["Paris"], 0.0, 1.0),  # curly quotes kept officially
        ("rock ’n’ roll", ["rock 'n' roll"], 0.0, 1.0),  # 'rock ’n’ roll' != 'rock n roll'
        ("1914–1918", ["1914-1918"], 0.0, 1.0),  # '1914–1918' != '19141918'
        ("１０００", ["1000"], 0.0, 1.0),  # fullwidth digits are not ASCII digits officially
        ("ﬁnance", ["finance"], 0.0, 1.0),  # the ligature is one character officially
        ("Café", ["Cafe\u0301"], 0.0, 1.0),  # composed vs decomposed é differ without NFKC
        ("Café", ["Cafe"], 0.0, 0.0),  # é is not e in either variant
        (" new   york ", ["New York"], 1.0, 1.0),  # whitespace collapsed
        ("Fab Four", ["The Beatles", "the fab four"], 1.0, 1.0),  # any alias counts: the second matches
        ("Rolling Stones", ["The Beatles", "Fab Four"], 0.0, 0.0),  # no alias matches
        ("Yes, it is.", ["yes"], 0.0, 0.0),  # 'yes it is' != 'yes': EM is not containment
        ("", [""], 1.0, 1.0),  # '' == ''
        ("", ["x"], 0.0, 0.0),  # '' != 'x'
        ("The", ["a"], 1.0, 1.0),  # both normalise to ''
        ("Paris", [], 0.0, 0.0),  # no golds: 0 (Router-R1's em_check; SQuAD's max() would fail)
        ("Paris", "paris", 1.0, 1.0),  # a bare string is one alias
        ("P", "Paris", 0.0, 0.0),  # ... not its characters ('p' would match the alias 'P')
    ],
)
def test_exact_match(prediction: str, golds: list[str], official: float, lenient: float) -> None:
    assert exact_match(prediction, golds) == official
    assert exact_match(prediction, golds, normalize="unicode") == lenient


@pytest.mark.parametrize(
    ("prediction", "golds", "official", "lenient"),
    [
        ("The capital is Paris.", ["paris"], 1.0, 1.0),  # 'paris' occurs in 'capital is paris'
        ("Yes, it is.", ["yes"], 1.0, 1.0),  # 'yes' occurs in 'yes it is'
        ("It is London", ["Paris", "london"], 1.0, 1.0),  # second alias occurs
        ("Parisian food", ["paris"], 1.0, 1.0),  # character containment, not token: 'paris' in 'parisian'
        ("«Paris»", ["Paris"], 1.0, 1.0),  # 'paris' occurs inside '«paris»'
        ("1914–1918", ["1914-1918"], 0.0, 1.0),  # '19141918' not in '1914–1918'; lenient drops the dash
        ("Lyon", ["paris"], 0.0, 0.0),  # absent
        ("anything", [""], 1.0, 1.0),  # '' occurs in every string (subem_check has no guard)
        ("anything", ["The"], 1.0, 1.0),  # 'The' normalises to '', which occurs everywhere
        ("", ["paris"], 0.0, 0.0),  # empty prediction contains no 'paris'
        ("x", "xyz", 0.0, 0.0),  # a bare string is one alias: 'xyz' not in 'x'
        ("x", [], 0.0, 0.0),  # no golds
    ],
)
def test_substring_match(prediction: str, golds: list[str], official: float, lenient: float) -> None:
    assert substring_match(prediction, golds) == official
    assert substring_match(prediction, golds, normalize="unicode") == lenient


@pytest.mark.parametrize(
    ("prediction", "golds", "squad", "hotpotqa", "lenient"),
    [
        ("the eiffel tower paris", ["eiffel tower"], 0.8, 0.8, 0.8),  # P=2/3, R=1 → 0.8
        ("eiffel", ["eiffel tower"], 0.6666666666666666, 0.6666666666666666, 0.6666666666666666),  # R=1/2
        ("paris paris", ["paris"], 0.6666666666666666, 0.6666666666666666, 0.6666666666666666),  # common 1
        ("new york city", ["york", "new york"], 0.8, 0.8, 0.8),  # 0.5 vs 'york', 0.8 vs 'new york': best
        ("w x y z", ["y z u v"], 0.5, 0.5, 0.5),  # overlap 2: P=2/4, R=2/4
        ("a b c d", ["c d e f"], 0.5714285714285715, 0.5714285714285715, 0.5714285714285715),  # 'a' dropped
        ("The Beatles", ["beatles"], 1.0, 1.0, 1.0),  # identical after normalisation
        ("london", ["paris"], 0.0, 0.0, 0.0),  # no overlap
        ("", [""], 0.0, 0.0, 0.0),  # no tokens on either side: num_same = 0 → 0, not 1
        ("the", ["an"], 0.0, 0.0, 0.0),  # articles only: both sides empty → 0
        ("The", ["The"], 0.0, 0.0, 0.0),  # even identical articles-only strings: F1 0 while EM is 1
        ("", ["paris"], 0.0, 0.0, 0.0),  # empty prediction
        ("paris", [""], 0.0, 0.0, 0.0),  # empty gold
        ("«Paris» France", ["Paris"], 0.0, 0.0, 0.6666666666666666),  # '«paris»' != 'paris'; lenient P=1/2
        ("１０００ people", ["1000 people"], 0.5, 0.5, 1.0),  # only 'people' shared officially
        ("rock ’n’ roll", ["rock 'n' roll"], 0.6666666666666666, 0.6666666666666666, 1.0),  # rock, roll
        ("1914–1918 war", ["1914-1918 war"], 0.5, 0.5, 1.0),  # only 'war' shared officially
        ("yes it is", ["yes"], 0.5, 0.0, 0.5),  # HotpotQA / Router-R1: gold 'yes' and pred != gold → 0
        ("No, it is not", ["no"], 0.4, 0.0, 0.4),  # SQuAD P=1/4, R=1 → 0.4; yes/no rule → 0
        ("no", ["no way"], 0.6666666666666666, 0.0, 0.6666666666666666),  # prediction 'no' != 'no way'
        ("yes", ["Yes."], 1.0, 1.0, 1.0),  # 'yes' == 'yes': the rule does not apply
        ("yes", ["no"], 0.0, 0.0, 0.0),  # no overlap either way
        ("noanswer", ["no answer"], 0.0, 0.0, 0.0),  # one token vs two, none shared
        ("paris", ["yes", "paris"], 1.0, 1.0, 1.0),  # max over aliases: 0 vs 'yes', 1 vs 'paris'
        ("paris", "paris", 1.0, 1.0, 1.0),  # a bare string is one alias
        ("x", [], 0.0, 0.0, 0.0),  # no golds
    ],
)
def test_token_f1(prediction: str, golds: list[str], squad: float, hotpotqa: float, lenient: float) -> None:
    assert token_f1(prediction, golds) == squad
    assert token_f1(prediction, golds, rule="squad") == squad
    assert token_f1(prediction, golds, rule="hotpotqa") == hotpotqa
    assert token_f1(prediction, golds, normalize="unicode") == lenient


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so the answer is 42.", 42.0),  # the trailing period is not a decimal point
        ("1,000", 1000.0),  # thousands separator removed
        ("1000.0", 1000.0),  # decimal kept
        ("total: 1,234,567.89 dollars", 1234567.89),  # several separators and a decimal
        ("from 3 to 7", 7.0),  # the last number wins
        ("It fell to -3.5 degrees", -3.5),  # negative decimal
        ("-12", -12.0),  # negative integer
        ("about .5 of it", 0.5),  # leading-dot decimal
        ("answer: 42,", 42.0),  # trailing comma dropped with the separators
        ("４２", 42.0),  # fullwidth digits are \\d and float() accepts them
        ("no numbers here", None),  # nothing to find
        ("", None),  # empty text
    ],
)
def test_final_number(text: str, expected: float | None) -> None:
    assert final_number(text) == expected


@pytest.mark.parametrize(
    ("prediction", "golds", "expected"),
    [
        ("The answer is 1,000.", ["1000"], 1.0),  # 1000 == 1000
        ("1000.0", ["1,000"], 1.0),  # 1000.0 == 1000
        ("so the answer is 42.", ["42"], 1.0),  # final number 42
        ("42", ["41"], 0.0),  # off by one
        ("-7", ["-7"], 1.0),  # negatives agree
        ("7", ["-7"], 0.0),  # sign matters
        ("12", ["eleven", "11", "12"], 1.0),  # a gold with no number is skipped; third alias matches
        ("0.1", ["0.1000000001"], 1.0),  # |diff| = 1e-10 ≤ 1e-6·max(1, 0.1)
        ("1000002", ["1000000"], 0.0),  # |diff| = 2 > 1e-6·1e6 = 1
        ("no number", ["42"], 0.0),  # prediction without a number
        ("42", [], 0.0),  # no golds
    ],
)
def test_numeric_match(prediction: str, golds: list[str], expected: float) -> None:
    assert numeric_match(prediction, golds) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("B", "B"),  # bare letter
        ("(b)", "B"),  # parenthesised, lowercase → upper
        ("B. wind", "B"),  # letter then period and the option's text
        ("d)", "D"),  # letter and closing parenthesis
        ("C: rain", "C"),  # letter then colon
        ("  e  ", "E"),  # surrounding whitespace stripped
        ("The answer is C", "C"),  # 'answer is' phrase
        ("I think the answer is (a).", "A"),  # phrase with a parenthesised letter
        ("answer: d", "D"),  # 'answer:' phrase
        ("none", None),  # 'n' is not a choice letter and there is no 'answer' phrase
        ("F", None),  # only A–E are choices
        ("Because of wind", None),  # 'B' followed by a letter is a word, not a choice
        ("answer: both", None),  # 'b' inside a word after 'answer:' is not a choice
        ("", None),  # empty
    ],
)
def test_choice_letter(text: str, expected: str | None) -> None:
    assert choice_letter(text) == expected


@pytest.mark.parametrize(
    ("prediction", "golds", "expected"),
    [
        ("(b)", ["B"], 1.0),  # B == B
        ("B", [" b "], 1.0),  # gold stripped and uppercased
        ("C", ["A", "C"], 1.0),  # any gold counts
        ("The answer is D", ["A"], 0.0),  # D != A
        ("none", ["A"], 0.0),  # no letter → 0
    ],
)
def test_choice_match(prediction: str, golds: list[str], expected: float) -> None:
    assert choice_match(prediction, golds) == expected


# -- answer formats ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("question", "fmt"),
    [
        ("Which is a mammal?\nA) shark\nB) whale\nC) trout", "choice"),
        ("Which is a mammal? (A) shark (B) whale", "choice"),
        ("Tom has 2+3 apples and Ann has 4+5 apples. How many apples do they have together?", "number"),
        ("Who wrote the novel that inspired the film Blade Runner?", "span"),
    ],
)
def test_answer_format_detection(question: str, fmt: str) -> None:
    assert answers.answer_format(question) == fmt


def test_clean_answer() -> None:
    assert answers.clean_answer("The answer is (B) whale", "choice", ["A", "B", "C"]) == "B"
    assert answers.clean_answer("48 + 24 = 72", "number") == "72"
    assert answers.clean_answer("1,200.0", "number") == "1200"
    assert answers.clean_answer("Answer: Philip K. Dick.\nHe wrote it.", "span") == "Philip K. Dick"


# -- what a model's reply answers ----------------------------------------------------------------------
FRANCE = "What is the capital of France?"
CHOICE = "Where does a wild bird usually live?\nA. cage\nB. sky\nC. countryside\nAnswer with the letter."
MATH = "Tom has 2+3 apples and Ann has 4+5. How many apples do they have together?"


@pytest.mark.parametrize(
    ("reply", "stated"),
    [
        ("Paris", "Paris"),  # short: the reply is the answer
        ("Paris is the capital of France.", "Paris is the capital of France."),
        ("2+3 = 5 and 4+5 = 9, so 5 + 9 = 14.\nAnswer: 14", "14"),  # reasoning, then an answer line
        ("Final answer: B", "B"),
        (" ".join(["word"] * 26), None),  # a paragraph with no answer line states no answer
        ("Paris.\nIt is in France.", None),  # two lines: an explanation, not a stated answer
        ("", None),
        (None, None),  # a failed or refused call
    ],
)
def test_reply_answer(reply: str | None, stated: str | None) -> None:
    assert answers.reply_answer(reply) == stated


@pytest.mark.parametrize(
    ("question", "reply", "stated"),
    [
        (CHOICE, "Birds fly, and the sky is open.\nAnswer: B", "B"),
        (CHOICE, "B. sky", "B"),
        (CHOICE, "Answer: the sky", None),  # no letter: the router has to map it to a choice
        (MATH, "5 + 9 = 14\nAnswer: 14 apples", "14"),
        (MATH, "Answer: fourteen", None),
        (FRANCE, "Paris.", "Paris"),
        (FRANCE, " ".join(["blah"] * 30), None),
        (CHOICE, None, None),
    ],
)
def test_stated_answer_is_the_replys_answer_in_the_questions_format(
    question: str, reply: str | None, stated: str | None
) -> None:
    assert answers.stated_answer(question, reply) == stated
