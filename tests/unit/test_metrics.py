"""Answer scoring, case by case: every expected value is worked out by hand in the comment beside it."""

from __future__ import annotations

import pytest

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
        ("«Paris»", "paris"),  # Unicode punctuation (Pi/Pf) removed too
        ("rock—and—roll", "rockandroll"),  # em dash (Pd) removed, not turned into a space
        ("The-End", "theend"),  # punctuation goes before articles: 'theend' has no article left
        ("  new\tYORK \n city ", "new york city"),  # case folded, whitespace collapsed
        ("Cafe\u0301", "café"),  # NFKC composes e + combining acute into é
        ("１２３", "123"),  # NFKC folds fullwidth digits to ASCII
        ("ﬁsh", "fish"),  # NFKC expands the fi ligature
        ("", ""),  # empty stays empty
        ("The a an", ""),  # only articles: nothing left
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(
    ("prediction", "golds", "expected"),
    [
        ("The Beatles", ["beatles"], 1.0),  # 'beatles' == 'beatles'
        ("Paris!", ["paris"], 1.0),  # punctuation and case ignored
        ("Café", ["Cafe\u0301"], 1.0),  # composed and decomposed é agree after NFKC
        ("Café", ["Cafe"], 0.0),  # é is not e: accents are kept
        ("１９６９", ["1969"], 1.0),  # fullwidth digits fold to ASCII
        (" new   york ", ["New York"], 1.0),  # whitespace collapsed
        ("Fab Four", ["The Beatles", "the fab four"], 1.0),  # any alias counts: second one matches
        ("Rolling Stones", ["The Beatles", "Fab Four"], 0.0),  # no alias matches
        ("Yes.", ["yes"], 1.0),  # 'yes' == 'yes'
        ("no", ["yes"], 0.0),  # 'no' != 'yes'
        ("Yes, it is.", ["yes"], 0.0),  # 'yes it is' != 'yes': EM is not containment
        ("", [""], 1.0),  # '' == ''
        ("", ["x"], 0.0),  # '' != 'x'
        ("Paris", [], 0.0),  # no golds: nothing to match
        ("The", ["a"], 1.0),  # both normalise to ''
    ],
)
def test_exact_match(prediction: str, golds: list[str], expected: float) -> None:
    assert exact_match(prediction, golds) == expected


@pytest.mark.parametrize(
    ("prediction", "golds", "expected"),
    [
        ("The capital is Paris.", ["paris"], 1.0),  # 'paris' occurs in 'capital is paris'
        ("Yes, it is.", ["yes"], 1.0),  # 'yes' occurs in 'yes it is'
        ("It is London", ["Paris", "london"], 1.0),  # second alias occurs
        ("Parisian food", ["paris"], 1.0),  # character containment, not token: 'paris' in 'parisian'
        ("Lyon", ["paris"], 0.0),  # absent
        ("anything", [""], 0.0),  # an empty gold never counts
        ("anything", ["The"], 0.0),  # a gold that normalises to '' never counts
        ("", ["paris"], 0.0),  # empty prediction contains nothing
    ],
)
def test_substring_match(prediction: str, golds: list[str], expected: float) -> None:
    assert substring_match(prediction, golds) == expected


@pytest.mark.parametrize(
    ("prediction", "golds", "expected"),
    [
        ("the eiffel tower paris", ["eiffel tower"], 0.8),  # P=2/3, R=2/2=1 → 2·(2/3)/(5/3)=0.8
        ("eiffel", ["eiffel tower"], 2 / 3),  # P=1/1, R=1/2 → 2·(1/2)/(3/2)=2/3
        ("paris paris", ["paris"], 2 / 3),  # overlap min(2,1)=1: P=1/2, R=1 → 2/3
        ("new york city", ["york", "new york"], 0.8),  # vs 'york' P=1/3,R=1 → 0.5; vs 'new york' 0.8: best
        ("The Beatles", ["beatles"], 1.0),  # identical after normalisation
        ("london", ["paris"], 0.0),  # no overlap
        ("", [""], 1.0),  # both empty: treated as a match
        ("", ["paris"], 0.0),  # empty prediction, non-empty gold
        ("paris", [""], 0.0),  # non-empty prediction, empty gold
        ("the", ["an"], 1.0),  # both normalise to no tokens
        ("w x y z", ["y z u v"], 0.5),  # overlap 2: P=2/4, R=2/4 → 0.5
        ("a b c d", ["c d e f"], 4 / 7),  # 'a' is an article: P=2/3, R=2/4 → (2/3)/(7/6)=4/7
        ("x", [], 0.0),  # no golds
    ],
)
def test_token_f1(prediction: str, golds: list[str], expected: float) -> None:
    assert token_f1(prediction, golds) == pytest.approx(expected)


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
