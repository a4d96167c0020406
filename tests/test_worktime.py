"""Working time (`bot.core.worktime.WorkingTime`): "4 working hours" and "2 working days".

Exact examples first (Europe/Amsterdam, 09:00-17:00, Monday to Friday unless stated), then
Hypothesis properties. Results are aware UTC moments; the examples compare them with local
wall-clock times, so a wrong UTC offset around a DST change shows as a wrong local hour.
Hours are elapsed time inside the windows: a window holding a DST change counts its real length.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bot.core.worktime import WorkingTime

AMS = ZoneInfo("Europe/Amsterdam")
UTC = dt.timezone.utc
WEEKDAYS = [1, 2, 3, 4, 5]
OFFICE = WorkingTime.parse("Europe/Amsterdam", "09:00-17:00", WEEKDAYS)


def ams(year: int, month: int, day: int, hour: int = 0, minute: int = 0, *, fold: int = 0) -> dt.datetime:
    """A wall-clock time in Amsterdam (aware)."""
    return dt.datetime(year, month, day, hour, minute, tzinfo=AMS, fold=fold)


def wall(moment: dt.datetime, tz: dt.tzinfo = AMS) -> tuple[str, str]:
    """(weekday, "YYYY-MM-DD HH:MM[:SS.ffffff] +HHMM") of a moment on the local wall clock."""
    local = moment.astimezone(tz)
    clock = local.strftime("%Y-%m-%d %H:%M") + (local.strftime(":%S.%f") if local.second or local.microsecond
                                                 else "")
    return local.strftime("%a"), f"{clock} {local.strftime('%z')}"


# -- parse ----------------------------------------------------------------------------------------------


def test_parse_reads_the_config_values():
    wt = WorkingTime.parse("Europe/Amsterdam", "08:30-12:00", [3, 1, 1])
    assert wt.timezone == AMS and wt.start == dt.timedelta(hours=8, minutes=30) and wt.end == dt.timedelta(hours=12)
    assert wt.days == frozenset({1, 3})
    assert WorkingTime.parse(AMS, "09:00-17:00", WEEKDAYS).timezone is AMS  # a tzinfo is taken as is


# -- add_hours: exact examples ------------------------------------------------------------------------------


def test_results_are_aware_utc():
    result = OFFICE.add_hours(ams(2026, 6, 8, 10), 1)
    assert result.tzinfo is UTC
    assert result == dt.datetime(2026, 6, 8, 9, 0, tzinfo=UTC)  # 11:00 CEST


def test_within_one_day():
    monday_10 = ams(2026, 6, 8, 10)
    assert OFFICE.add_hours(monday_10, 3) == ams(2026, 6, 8, 13)
    assert OFFICE.add_hours(monday_10, 0.25) == ams(2026, 6, 8, 10, 15)
    assert OFFICE.add_hours(monday_10, 1.5) == ams(2026, 6, 8, 11, 30)
    # The end of the day is inclusive: exactly the rest of the day ends at 17:00, not next morning.
    assert OFFICE.add_hours(monday_10, 7) == ams(2026, 6, 8, 17)
    assert OFFICE.add_hours(ams(2026, 6, 8, 9), 8) == ams(2026, 6, 8, 17)


def test_crossing_the_evening_into_the_next_morning():
    assert OFFICE.add_hours(ams(2026, 6, 8, 15), 4) == ams(2026, 6, 9, 11)
    assert OFFICE.add_hours(ams(2026, 6, 8, 16, 45), 0.5) == ams(2026, 6, 9, 9, 15)
    assert OFFICE.add_hours(ams(2026, 6, 8, 10), 7.25) == ams(2026, 6, 9, 9, 15)
    # Starting after closing time: the count starts next morning.
    assert OFFICE.add_hours(ams(2026, 6, 8, 18), 1) == ams(2026, 6, 9, 10)
    assert OFFICE.add_hours(ams(2026, 6, 8, 17), 1) == ams(2026, 6, 9, 10)
    # Several days: 20 hours from Monday 9:00 is Wednesday 13:00.
    assert OFFICE.add_hours(ams(2026, 6, 8, 9), 20) == ams(2026, 6, 10, 13)


def test_friday_afternoon_plus_four_hours_is_monday_noon():
    friday_16 = ams(2026, 6, 12, 16)
    assert wall(friday_16)[0] == "Fri"
    result = OFFICE.add_hours(friday_16, 4)
    assert result == ams(2026, 6, 15, 12)
    assert wall(result) == ("Mon", "2026-06-15 12:00 +0200")


def test_starting_on_a_weekend():
    saturday_11 = ams(2026, 6, 13, 11)
    assert OFFICE.add_hours(saturday_11, 2) == ams(2026, 6, 15, 11)
    assert OFFICE.add_hours(saturday_11, 8) == ams(2026, 6, 15, 17)
    assert OFFICE.add_hours(saturday_11, 9) == ams(2026, 6, 16, 10)
    assert OFFICE.add_hours(ams(2026, 6, 14, 23, 59), 1) == ams(2026, 6, 15, 10)  # Sunday night


def test_starting_before_opening_time():
    assert OFFICE.add_hours(ams(2026, 6, 9, 7, 30), 1) == ams(2026, 6, 9, 10)
    assert OFFICE.add_hours(ams(2026, 6, 9, 0, 0), 8) == ams(2026, 6, 9, 17)
    assert OFFICE.add_hours(ams(2026, 6, 9, 8, 59), 0.25) == ams(2026, 6, 9, 9, 15)


def test_the_start_moment_may_be_given_in_any_time_zone():
    in_utc = dt.datetime(2026, 6, 12, 14, 0, tzinfo=UTC)  # Friday 16:00 in Amsterdam
    in_new_york = in_utc.astimezone(ZoneInfo("America/New_York"))
    assert OFFICE.add_hours(in_utc, 4) == OFFICE.add_hours(in_new_york, 4) == ams(2026, 6, 15, 12)


# -- DST weekends: the result is right on the local wall clock ------------------------------------------------


def test_over_the_autumn_dst_change_the_result_is_in_local_wall_clock_time():
    """Summer time ends on Sunday 2026-10-25 (03:00 CEST -> 02:00 CET)."""
    friday_15 = ams(2026, 10, 23, 15)
    assert wall(friday_15) == ("Fri", "2026-10-23 15:00 +0200")
    result = OFFICE.add_hours(friday_15, 4)
    # 2 hours on Friday, 2 on Monday: Monday 11:00 on the clock, now one hour from UTC.
    assert wall(result) == ("Mon", "2026-10-26 11:00 +0100")
    assert result == dt.datetime(2026, 10, 26, 10, 0, tzinfo=UTC)
    # Friday 15:00 to Monday 11:00 is 68 hours on the clock but 69 real hours: adding elapsed time
    # (in UTC) would have given Monday 10:00.
    assert result - friday_15 == dt.timedelta(hours=69)
    assert OFFICE.add_hours(friday_15, 2) == ams(2026, 10, 23, 17)
    assert OFFICE.add_hours(ams(2026, 10, 23, 17), 8) == ams(2026, 10, 26, 17)


def test_over_the_spring_dst_change_the_result_is_in_local_wall_clock_time():
    """Summer time starts on Sunday 2027-03-28 (02:00 CET -> 03:00 CEST)."""
    friday_16 = ams(2027, 3, 26, 16)
    assert wall(friday_16) == ("Fri", "2027-03-26 16:00 +0100")
    result = OFFICE.add_hours(friday_16, 2)
    assert wall(result) == ("Mon", "2027-03-29 10:00 +0200")
    assert result == dt.datetime(2027, 3, 29, 8, 0, tzinfo=UTC)
    assert OFFICE.add_hours(friday_16, 4) == ams(2027, 3, 29, 12)
    # Starting during the lost hour's night (Sunday 01:30 CET) changes nothing for an office.
    assert OFFICE.add_hours(ams(2027, 3, 28, 1, 30), 1) == ams(2027, 3, 29, 10)


def test_working_days_over_dst_changes_end_at_closing_time_local():
    assert wall(OFFICE.add_days(ams(2026, 10, 22, 10), 2)) == ("Mon", "2026-10-26 17:00 +0100")
    assert wall(OFFICE.add_days(ams(2027, 3, 25, 10), 2)) == ("Mon", "2027-03-29 17:00 +0200")


# -- custom days and hours -------------------------------------------------------------------------------------


MORNINGS = WorkingTime.parse("Europe/Amsterdam", "08:30-12:00", [1, 3])  # Monday and Wednesday mornings


def test_custom_working_days_and_hours():
    monday = ams(2026, 6, 8)
    assert MORNINGS.add_hours(monday.replace(hour=8, minute=30), 3.5) == ams(2026, 6, 8, 12)  # the whole morning
    assert MORNINGS.add_hours(monday.replace(hour=9), 3.5) == ams(2026, 6, 10, 9)  # 3 h Monday, 0.5 h Wednesday
    assert MORNINGS.add_hours(monday.replace(hour=11), 2) == ams(2026, 6, 10, 9, 30)  # 1 h Monday, 1 h Wednesday
    assert MORNINGS.add_hours(ams(2026, 6, 9, 10), 0.5) == ams(2026, 6, 10, 9, 0)  # Tuesday is not a working day
    assert MORNINGS.add_hours(ams(2026, 6, 10, 11), 4) == ams(2026, 6, 15, 11, 30)  # Wednesday -> next Monday
    assert MORNINGS.add_hours(ams(2026, 6, 8, 7), 0.25) == ams(2026, 6, 8, 8, 45)  # before 08:30
    assert MORNINGS.add_hours(ams(2026, 6, 8, 13), 7) == ams(2026, 6, 15, 12)  # two mornings, end inclusive


def test_custom_working_days_for_add_days():
    assert MORNINGS.add_days(ams(2026, 6, 8, 9), 1) == ams(2026, 6, 10, 12)  # Monday -> Wednesday noon
    assert MORNINGS.add_days(ams(2026, 6, 10, 9), 1) == ams(2026, 6, 15, 12)  # Wednesday -> next Monday
    assert MORNINGS.add_days(ams(2026, 6, 11, 9), 2) == ams(2026, 6, 17, 12)  # Thursday -> Mon, Wed


def test_a_single_working_day_a_week():
    sundays = WorkingTime.parse("Europe/Amsterdam", "10:00-14:00", [7])
    assert sundays.add_hours(ams(2026, 6, 8, 12), 5) == ams(2026, 6, 21, 11)  # Sun 14 (4 h) + Sun 21 (1 h)


# -- "24:00" as the end of the day -------------------------------------------------------------------------------


EVENINGS = WorkingTime.parse("Europe/Amsterdam", "18:00-24:00", WEEKDAYS)
ALWAYS = WorkingTime.parse("Europe/Amsterdam", "00:00-24:00", [1, 2, 3, 4, 5, 6, 7])


def test_24_00_is_accepted_as_the_end_of_the_day():
    assert EVENINGS.start == dt.timedelta(hours=18) and EVENINGS.end == dt.timedelta(hours=24)
    assert EVENINGS.add_hours(ams(2026, 6, 8, 20), 3) == ams(2026, 6, 8, 23)
    assert EVENINGS.add_hours(ams(2026, 6, 8, 12), 1.5) == ams(2026, 6, 8, 19, 30)
    assert EVENINGS.add_hours(ams(2026, 6, 12, 23), 0.5) == ams(2026, 6, 12, 23, 30)




def test_24_00_four_hours_from_20_00_end_at_midnight():
    # Monday 20:00 + 4 h = Monday 24:00 (Tuesday 00:00 on the clock), the end of Monday's window.
    assert EVENINGS.add_hours(ams(2026, 6, 8, 20), 4) == ams(2026, 6, 9, 0, 0)


def test_24_00_over_midnight_continues_in_the_next_window():
    assert EVENINGS.add_hours(ams(2026, 6, 8, 20), 5) == ams(2026, 6, 9, 19)  # today: 19:00:00.000001


def test_24_00_round_the_clock_a_day_is_24_hours():
    assert ALWAYS.add_hours(ams(2026, 6, 8, 0), 24) == ams(2026, 6, 9, 0)  # today: 00:00:00.000001
    assert ALWAYS.add_hours(ams(2026, 6, 8, 0), 48) == ams(2026, 6, 10, 0)  # today: 00:00:00.000002


def test_24_00_add_days_ends_at_midnight():
    assert EVENINGS.add_days(ams(2026, 6, 8, 20), 1) == ams(2026, 6, 10, 0)  # today: Tue 23:59:59.999999


# -- add_days -------------------------------------------------------------------------------------------------


def test_two_working_days_from_thursday_is_monday_at_closing_time():
    thursday = ams(2026, 6, 11, 10)
    assert wall(thursday)[0] == "Thu"
    result = OFFICE.add_days(thursday, 2)
    assert wall(result) == ("Mon", "2026-06-15 17:00 +0200")
    assert result == dt.datetime(2026, 6, 15, 15, 0, tzinfo=UTC) and result.tzinfo is UTC


def test_add_days_counts_from_the_day_of_the_moment_whatever_the_hour():
    assert OFFICE.add_days(ams(2026, 6, 8, 8), 1) == ams(2026, 6, 9, 17)  # before opening: still Monday
    assert OFFICE.add_days(ams(2026, 6, 8, 23), 1) == ams(2026, 6, 9, 17)  # after closing: still Monday
    assert OFFICE.add_days(ams(2026, 6, 12, 20), 1) == ams(2026, 6, 15, 17)  # Friday evening -> Monday
    assert OFFICE.add_days(ams(2026, 6, 13, 11), 1) == ams(2026, 6, 15, 17)  # Saturday -> Monday
    assert OFFICE.add_days(ams(2026, 6, 8, 10), 5) == ams(2026, 6, 15, 17)  # a working week
    # The day is the Amsterdam day: 23:30 UTC on Sunday is already Monday in Amsterdam.
    assert OFFICE.add_days(dt.datetime(2026, 6, 14, 23, 30, tzinfo=UTC), 1) == ams(2026, 6, 16, 17)


def test_no_working_days_at_all_is_an_error_not_a_hang():
    never = WorkingTime(AMS, dt.timedelta(hours=9), dt.timedelta(hours=17), frozenset())
    with pytest.raises(ValueError):
        never.add_hours(ams(2026, 6, 8, 10), 1)
    with pytest.raises(ValueError):
        never.add_days(ams(2026, 6, 8, 10), 1)


# -- zero hours and associativity at the end of a day ----------------------------------------------------------


def test_zero_hours_is_the_next_working_moment_not_the_identity():
    """Why the associativity property below needs x, y > 0.

    The end of a window is inclusive for a result but not for a start: `add_hours(a, 0)` is the
    first working moment at or after `a` that still has working time after it. So at Friday 17:00
    `add_hours(add_hours(a, 1), 0)` is Monday 09:00 while `add_hours(a, 1 + 0)` is Friday 17:00."""
    friday_16 = ams(2026, 6, 12, 16)
    assert OFFICE.add_hours(friday_16, 1) == ams(2026, 6, 12, 17)
    assert OFFICE.add_hours(ams(2026, 6, 12, 17), 0) == ams(2026, 6, 15, 9)
    assert OFFICE.add_hours(OFFICE.add_hours(friday_16, 1), 0) != OFFICE.add_hours(friday_16, 1 + 0)
    # With both parts positive the end of the day is no problem:
    assert OFFICE.add_hours(OFFICE.add_hours(friday_16, 1), 0.25) == OFFICE.add_hours(friday_16, 1.25) \
        == ams(2026, 6, 15, 9, 15)
    # Inside a window zero hours is the identity.
    assert OFFICE.add_hours(ams(2026, 6, 12, 11), 0) == ams(2026, 6, 12, 11)


# -- windows that contain a DST change (round-the-clock or night work on a Sunday) -------------------------------




def test_in_the_repeated_autumn_hour_the_result_is_not_before_the_start():
    """Sunday 2026-10-25 02:30 CET (the second 02:30, 01:30 UTC) + 15 minutes: 02:45 CET."""
    start = dt.datetime(2026, 10, 25, 1, 30, tzinfo=UTC)
    assert wall(start) == ("Sun", "2026-10-25 02:30 +0100")
    result = ALWAYS.add_hours(start, 0.25)
    assert result >= start  # today: 00:45 UTC (02:45 CEST), 45 minutes *before* the start
    assert result == dt.datetime(2026, 10, 25, 1, 45, tzinfo=UTC)


def test_over_the_lost_spring_hour_more_hours_is_never_earlier():
    """Sunday 2027-03-28 01:00 CET: +1.5 h and +2 h must not go backwards."""
    start = ams(2027, 3, 28, 1)
    one_and_a_half, two = ALWAYS.add_hours(start, 1.5), ALWAYS.add_hours(start, 2)
    # today: +1.5 h = 03:30 CEST (wall 02:30 does not exist) but +2 h = 03:00 CEST, the same as +1 h
    assert one_and_a_half < two
    assert ALWAYS.add_hours(ALWAYS.add_hours(start, 1.5), 0.5) == two


# -- Hypothesis properties -------------------------------------------------------------------------------------


QUARTERS = st.integers(min_value=1, max_value=160).map(lambda n: n / 4)  # (0, 40] in quarter hours


def quarter_moments(tz: dt.tzinfo = AMS) -> st.SearchStrategy[dt.datetime]:
    """Moments on a quarter hour of the local clock (these hit window starts and ends exactly)."""
    return st.builds(
        lambda day, quarter, fold: dt.datetime.combine(day, dt.time(quarter // 4, quarter % 4 * 15), tz).replace(fold=fold),
        st.dates(dt.date(2020, 1, 1), dt.date(2035, 12, 31)), st.integers(0, 95), st.integers(0, 1),
    )


#: Any aware moment (any zone, any microsecond) or one on a local quarter hour.
MOMENTS = st.one_of(
    st.datetimes(dt.datetime(2020, 1, 1), dt.datetime(2035, 12, 31), allow_imaginary=False,
                 timezones=st.sampled_from([UTC, AMS, ZoneInfo("America/New_York"), ZoneInfo("Asia/Tokyo")])),
    quarter_moments(),
)


def at(wt: WorkingTime, day: dt.date, offset: dt.timedelta) -> dt.datetime:
    """A local wall-clock time `offset` after `day`'s midnight ("24:00" is the next midnight)."""
    return (dt.datetime.combine(day, dt.time.min) + offset).replace(tzinfo=wt.timezone)


def end_of(wt: WorkingTime, day: dt.date) -> dt.datetime:
    """The end of a day's window as a local moment."""
    return at(wt, day, wt.end)


def in_window(wt: WorkingTime, moment: dt.datetime, *, strict_start: bool) -> bool:
    """Inside some day's window (start..end, the end inclusive), on a working day, local time."""
    local = moment.astimezone(wt.timezone)
    for day in (local.date(), local.date() - dt.timedelta(days=1)):  # "24:00" belongs to the day before
        if day.isoweekday() not in wt.days:
            continue
        begin = at(wt, day, wt.start)
        if (begin < moment if strict_start else begin <= moment) and moment <= end_of(wt, day):
            return True
    return False


def worked(wt: WorkingTime, a: dt.datetime, b: dt.datetime) -> dt.timedelta:
    """Working time between two moments, measured independently: each window as two UTC instants."""
    total = dt.timedelta(0)
    day = a.astimezone(wt.timezone).date() - dt.timedelta(days=1)
    while day <= b.astimezone(wt.timezone).date():
        if day.isoweekday() in wt.days:
            begin = at(wt, day, wt.start).astimezone(UTC)
            end = end_of(wt, day).astimezone(UTC)
            total += max(dt.timedelta(0), min(end, b) - max(begin, a))
        day += dt.timedelta(days=1)
    return total


PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(start=MOMENTS, hours=st.floats(min_value=0, max_value=40, exclude_min=True, allow_nan=False))
@example(start=ams(2026, 6, 12, 16), hours=1.0)  # ends exactly at Friday 17:00
@example(start=ams(2026, 6, 12, 17), hours=0.25)  # starts exactly at Friday 17:00
@example(start=ams(2026, 10, 23, 15), hours=4.0)  # over the autumn DST change
@example(start=ams(2027, 3, 26, 16), hours=2.0)  # over the spring DST change
def test_property_office_hours_result_is_after_the_start_and_inside_a_window(start, hours):
    result = OFFICE.add_hours(start, hours)
    assert result.tzinfo is UTC
    assert result >= start
    assert result - start >= dt.timedelta(hours=hours)  # working time never runs faster than the clock
    assert in_window(OFFICE, result, strict_start=dt.timedelta(hours=hours) > dt.timedelta(0))
    assert worked(OFFICE, start, result) == dt.timedelta(hours=hours)  # exactly that much working time


@PROPERTY
@given(start=MOMENTS, x=QUARTERS, y=QUARTERS)
@example(start=ams(2026, 6, 12, 16), x=1.0, y=0.25)  # x ends exactly at the end of Friday
@example(start=ams(2026, 6, 12, 9), x=8.0, y=8.0)  # a whole day, then the next
@example(start=ams(2026, 6, 13, 12), x=0.25, y=7.75)  # from a Saturday
def test_property_office_hours_add_up(start, x, y):
    """add_hours(a, x + y) == add_hours(add_hours(a, x), y) for x, y > 0, also when add_hours(a, x)
    is exactly the end of a day (17:00, inclusive); it does NOT hold for y == 0 (see above)."""
    assert OFFICE.add_hours(start, x + y) == OFFICE.add_hours(OFFICE.add_hours(start, x), y)
    assert OFFICE.add_hours(start, x) < OFFICE.add_hours(start, x + y)


#: Time zones with and without DST (Lord Howe shifts by 30 minutes; New York changes at 02:00).
ZONES = ["Europe/Amsterdam", "America/New_York", "Australia/Lord_Howe", "Asia/Tokyo", "Asia/Kolkata", "UTC"]


@st.composite
def working_times(draw) -> WorkingTime:
    """Any valid config: start before end, on quarter hours, "24:00" and DST-spanning windows included."""
    zone = draw(st.sampled_from(ZONES))
    start = draw(st.integers(0, 95))
    end = draw(st.integers(start + 1, 96))
    days = draw(st.lists(st.integers(1, 7), min_size=1, max_size=7, unique=True))
    hours = f"{start // 4:02d}:{start % 4 * 15:02d}-{end // 4:02d}:{end % 4 * 15:02d}"
    return WorkingTime.parse(zone, hours, days)


@PROPERTY
@given(wt=working_times(), start=MOMENTS, hours=QUARTERS)
def test_property_any_config_result_is_after_the_start_inside_a_window_and_exact(wt, start, hours):
    result = wt.add_hours(start, hours)
    assert result.tzinfo is UTC and result > start
    assert in_window(wt, result, strict_start=True)
    assert worked(wt, start, result) == dt.timedelta(hours=hours)


@PROPERTY
@given(wt=working_times(), data=st.data(), x=QUARTERS, y=QUARTERS)
def test_property_any_config_hours_add_up(wt, data, x, y):
    start = data.draw(st.one_of(MOMENTS, quarter_moments(wt.timezone)), label="start")
    assert wt.add_hours(start, x + y) == wt.add_hours(wt.add_hours(start, x), y)


@PROPERTY
@given(wt=working_times(), start=MOMENTS, days=st.integers(1, 30))
def test_property_add_days_ends_a_working_day_exactly_that_many_days_later(wt, start, days):
    result = wt.add_days(start, days)
    local = result.astimezone(wt.timezone)
    first = start.astimezone(wt.timezone).date()
    assert result.tzinfo is UTC and result > start
    window_day = local.replace(tzinfo=None) - wt.end  # midnight of the day whose window ends here
    assert window_day.time() == dt.time.min and window_day.isoweekday() in wt.days
    counted = sum(1 for n in range(1, (window_day.date() - first).days + 1)
                  if (first + dt.timedelta(days=n)).isoweekday() in wt.days)
    assert counted == days


# -- public holidays ---------------------------------------------------------------------------------


DUTCH = WorkingTime.parse("Europe/Amsterdam", "09:00-17:00", [1, 2, 3, 4, 5], "NL")


def test_kings_day_is_not_a_working_day():
    # Monday 26 April 2027 16:00 + 4 h: one hour on Monday, Tuesday 27 April is King's Day, so Wednesday 12:00.
    assert DUTCH.add_hours(ams(2027, 4, 26, 16), 4) == ams(2027, 4, 28, 12)
    assert OFFICE.add_hours(ams(2027, 4, 26, 16), 4) == ams(2027, 4, 27, 12)  # without holidays


def test_christmas_moves_the_police_report_deadline():
    # Reported Thursday 24 December 2026: Friday is Christmas, the weekend follows: Mon 28 and Tue 29.
    assert DUTCH.add_days(ams(2026, 12, 24, 10), 2) == ams(2026, 12, 29, 17)
    assert OFFICE.add_days(ams(2026, 12, 24, 10), 2) == ams(2026, 12, 28, 17)


def test_an_unknown_holiday_country_is_a_config_error():
    from pydantic import ValidationError

    from bot.config import FollowupSettings

    assert FollowupSettings(holidays="be").holidays == "BE" and FollowupSettings(holidays="").holidays == ""
    with pytest.raises(ValidationError, match="country code"):
        FollowupSettings(holidays="XX")
