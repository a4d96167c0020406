"""Cleaning, commands and answer words."""

import pytest

from dialogs.categories import is_urgent, suggest_injury, suggest_kinds, suggest_place, suggest_police_came
from dialogs.text import (
    Command, clean, guess_language, has_words, parse_change, parse_command, parse_numbers, split_leading_number,
)


@pytest.mark.parametrize(("text", "command"), [
    ("help", Command("help")), ("!HELP", Command("help")), ("/hulp", Command("help")), ("?", Command("help")),
    ("melden", Command("report")), ("Report", Command("report")),
    ("huisregels", Command("house_rules")), ("/house rules", Command("house_rules")),
    ("norm", Command("norm")), ("normkaart", Command("norm")), ("Norm card", Command("norm")),
    ("mijn meldingen", Command("my_reports")), ("!my reports", Command("my_reports")),
    ("taal en", Command("language", "en")), ("/language nl", Command("language", "nl")),
    ("Taal Engels", Command("language", "en")),
    ("stop", Command("cancel")), ("annuleer", Command("cancel")), ("Cancel.", Command("cancel")),
    ("terug", Command("back")), ("back", Command("back")),
    ("overslaan", Command("skip")), ("skip", Command("skip")),
])
def test_commands(text, command):
    assert parse_command(text) == command


@pytest.mark.parametrize("text", ["ik wil hulp", "help me please, he hit me", "norm is fout", "taal fr", ""])
def test_not_commands(text):
    assert parse_command(text) is None


def test_clean_removes_controls_and_invisible_characters_and_cuts():
    cleaned = clean("a\x00b\u202ec\u2066d\u200be\r\nf\x7f")
    assert cleaned.text == "abcde\nf"
    long = clean("x" * 10_000, limit=100)
    assert long.truncated and len(long.text) == 100 and long.original_length == 10_000
    assert clean(None).text == ""
    assert clean("  \n\n\n\n hoi  ").text == "hoi"


def test_has_words():
    assert has_words("ok") and not has_words("😡😡") and not has_words("123 !!") and not has_words("a")


@pytest.mark.parametrize(("text", "numbers"), [
    ("1 3", [1, 3]), ("1,3", [1, 3]), ("1 en 3", [1, 3]), ("2 & 5", [2, 5]), ("3 3", [3]), ("7", [7]),
    ("1 and 2", [1, 2]), ("twee", None), ("1 balie", None), ("", None),
])
def test_numbers(text, numbers):
    assert parse_numbers(text) == numbers


def test_change_and_leading_number():
    assert parse_change("wijzig 3") == 3 and parse_change("change 12") == 12 and parse_change("5") == 5
    assert parse_change("wijzig") is None
    assert split_leading_number("8 in de lift") == (8, "in de lift")
    assert split_leading_number("8. in de lift") == (8, "in de lift")
    assert split_leading_number("in de lift") == (None, "in de lift")


def test_language_guess():
    assert guess_language("I was just sworn at at the front desk") == "en"
    assert guess_language("ik werd net uitgescholden aan de balie") == "nl"
    assert guess_language("ok") is None


@pytest.mark.parametrize(("story", "kinds"), [
    ("ik werd uitgescholden", ["verbal"]),
    ("hij dreigde me te vermoorden", ["threat"]),
    ("Een man sloeg me en schopte tegen de balie", ["intimidation", "physical"]),
    ("racistische opmerkingen en ik werd bespuugd", ["physical", "discrimination"]),
    ("someone posted my photo on Facebook with threats", ["threat", "online"]),
    ("he offered me money, a bribe", ["bribery"]),
    ("ze hebben de ruit ingegooid", ["vandalism"]),
    ("het was vervelend", []),
    ("Ik stond op de trap", []),  # "trap" is not "kick" in Dutch
])
def test_kind_suggestions(story, kinds):
    assert suggest_kinds(story) == kinds


@pytest.mark.parametrize(("story", "place"), [
    ("aan de balie", "counter"), ("aan de telefoon", "phone"), ("bij een huisbezoek", "home_visit"),
    ("bij mij thuis voor de deur", "own_home"), ("aan de balie en later op facebook", "counter"),
    ("in de raadzaal", "meeting"), ("op straat tijdens handhaving", "street"), ("ergens", None),
    ("aan de balie en aan de telefoon", "counter"),  # the first place named
])
def test_place_suggestions(story, place):
    assert suggest_place(story) == place


def test_flags_from_story():
    assert suggest_police_came("de politie kwam erbij") and not suggest_police_came("ik wil naar de politie")
    assert suggest_injury("ik ben gewond") and not suggest_injury("ik ben boos")
    assert is_urgent(["verbal", "threat"]) and not is_urgent(["verbal"])
