"""Time phrases: dateparser plus our table for what it does not know; never in the future."""

import datetime as dt

import pytest

from dialogs.when import FutureTime, find_when_in_story, parse_when
from helpers import AMS, NOW


def at(day, hour, minute=0):
    return dt.datetime(2026, 11, day, hour, minute, tzinfo=AMS)


@pytest.mark.parametrize(("phrase", "expected", "just_now"), [
    ("net", NOW, True),
    ("zojuist", NOW, True),
    ("just now", NOW, True),
    ("vanochtend", at(23, 9), False),
    ("this morning", at(23, 9), False),
    ("vanmiddag", NOW, False),          # said at 10:15: not later than now
    ("gisteravond", at(22, 20), False),
    ("gisteren 14:30", at(22, 14, 30), False),
    ("Gisteren om 14.30", at(22, 14, 30), False),
    ("21-11 10:00", at(21, 10), False),
    ("yesterday afternoon", at(22, 15), False),
    ("yesterday 3pm", at(22, 15), False),
    ("om 10 uur", at(23, 10), False),
    ("om 16 uur", at(22, 16), False),   # a clock time later than now without a day: yesterday
    ("9:45", at(23, 9, 45), False),
    ("2 uur geleden", at(23, 8, 15), False),
    ("tien minuten geleden", at(23, 10, 5), False),
    ("een kwartier geleden", at(23, 10), False),
    ("an hour ago", at(23, 9, 15), False),
    ("vorige week dinsdag", at(17, 12), False),
])
def test_phrases(phrase, expected, just_now):
    found = parse_when(phrase, NOW)
    assert found is not None, phrase
    assert found.at == expected
    assert found.just_now is just_now


@pytest.mark.parametrize("phrase", ["morgen 10:00", "tomorrow", "25-12-2026 10:00", "volgende week"])
def test_future_is_refused(phrase):
    with pytest.raises(FutureTime):
        parse_when(phrase, NOW)


def test_day_without_year_after_today_means_last_year():
    assert parse_when("25-12 10:00", NOW).at == dt.datetime(2025, 12, 25, 10, 0, tzinfo=AMS)


@pytest.mark.parametrize("phrase", ["3", "blauw", "", "qwerty", "🙂"])
def test_not_a_time(phrase):
    assert parse_when(phrase, NOW) is None


def test_naive_now_is_a_programming_error():
    with pytest.raises(ValueError):
        parse_when("net", NOW.replace(tzinfo=None))


@pytest.mark.parametrize(("story", "expected"), [
    ("ik werd net uitgescholden aan de balie", NOW),
    ("Gisteren om 14:30 belde een man", at(22, 14, 30)),
    ("vanochtend stond er iemand te schreeuwen", at(23, 9)),
    ("I was threatened yesterday afternoon", at(22, 15)),
    ("Een klant werd boos", None),
])
def test_time_in_a_story(story, expected):
    found = find_when_in_story(story, NOW)
    assert (found.at if found else None) == expected
