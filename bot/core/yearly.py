"""The yearly overview for the annual conversation about aggression (nature, extent, approach):
the few counts it needs beyond `bot.core.stats.figures`, and the discussion points it generates.

Like storage/repo/stats.py, every count is one SQL aggregate over case facts (live and purged
cases alike); nothing here loads a case or opens a sealed field. A discussion point holds codes
and counts as they may be shown (`Count.shown`, "<5" for a hidden one), never a name, and a share
or a comparison only where none of the counts behind it is hidden."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.stats import Breakdown, Count, Figures, count
from storage.repo import stats as q
from storage.repo.stats import Scope

#: Years a statistics page offers (a year outside these is no page).
FIRST_YEAR = 2000


@dataclass(frozen=True)
class Extra:
    """What the yearly overview shows besides the figures."""

    unevaluated: Count


async def extra_figures(session: AsyncSession, scope: Scope, *, threshold: int) -> Extra:
    """The counts of the discussion points that `figures` does not have."""
    return Extra(unevaluated=count(await q.count_unevaluated(session=session, scope=scope), threshold))


@dataclass(frozen=True)
class Point:
    """One discussion point: a catalog key and its placeholders. `counts` are shown values ("<5"),
    `labels` name catalog keys to translate (a kind, a place), `shares` are fractions to format."""

    key: str
    counts: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    shares: dict[str, float] = field(default_factory=dict)


def safe_share(part: Count, whole: Count) -> float | None:
    """part/whole, or None when either is hidden or the whole is zero (a share would give a
    hidden count away)."""
    if part.suppressed or whole.suppressed or not whole.value:
        return None
    return part.value / whole.value


def _largest(breakdown: Breakdown):
    """The row with the highest shown count (not hidden, not zero), the first one on a tie."""
    rows = [r for r in breakdown.rows if r.code is not None and not r.current.suppressed and r.current.value]
    return max(rows, key=lambda r: r.current.value, default=None)


def _grew_most(breakdown: Breakdown):
    """The row that grew most against the period before, counting only rows where neither count is
    hidden (a hidden count must not be worked out from a difference)."""
    rows = [r for r in breakdown.rows if r.code is not None and not r.current.suppressed
            and not r.previous.suppressed and r.current.value > r.previous.value]
    return max(rows, key=lambda r: r.current.value - r.previous.value, default=None)


def discussion_points(figures: Figures, extra: Extra, *, year: int) -> list[Point]:
    """Short points for the annual conversation, generated from the figures of `year`."""
    years = {"year": str(year), "previous_year": str(year - 1)}
    points = [Point("stats.point_total", {**years, "count": figures.total.shown,
                                          "previous": figures.previous_total.shown})]
    if not figures.total.value:
        return points
    top = _largest(figures.kinds)
    if top is not None:
        points.append(Point("stats.point_top_kind", {"count": top.current.shown}, {"kind": f"kind.{top.code}"}))
    for breakdown, key, prefix in ((figures.kinds, "stats.point_kind_grew", "kind"),
                                   (figures.places, "stats.point_place_grew", "place")):
        grew = _grew_most(breakdown)
        if grew is not None:
            points.append(Point(key, {**years, "count": grew.current.shown, "previous": grew.previous.shown},
                                {"label": f"{prefix}.{grew.code}"}))
        elif breakdown is figures.kinds:
            points.append(Point("stats.point_no_growth", years))
    followup = figures.followup
    share = safe_share(followup.contacted_within_day, followup.contacted)
    if not followup.contacted.value:
        points.append(Point("stats.point_no_contact"))
    elif share is None:
        points.append(Point("stats.point_contact_few", {"threshold": str(figures.threshold)}))
    else:
        points.append(Point("stats.point_contact_share", {"within": followup.contacted_within_day.shown,
                                                          "contacted": followup.contacted.shown}, {},
                            {"share": share}))
    if followup.aftercare_offered.value:
        points.append(Point("stats.point_aftercare", {"offered": followup.aftercare_offered.shown,
                                                      "accepted": followup.aftercare_accepted.shown}))
    else:
        points.append(Point("stats.point_no_aftercare"))
    if followup.police_wanted.value or followup.police_filed.value:
        points.append(Point("stats.point_police", {"wanted": followup.police_wanted.shown,
                                                   "filed": followup.police_filed.shown}))
    if followup.long_open.value:
        points.append(Point("stats.point_long_open", {**years, "count": followup.long_open.shown}))
    if extra.unevaluated.value:
        points.append(Point("stats.point_unevaluated", {"count": extra.unevaluated.shown}))
    if not any(r.current.value for r in figures.measures.rows):
        points.append(Point("stats.point_no_measures"))
    return points


__all__ = ["Extra", "FIRST_YEAR", "Point", "discussion_points", "extra_figures", "safe_share"]
