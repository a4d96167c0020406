"""The statistics page /stats over HTTP, on SQLite and PostgreSQL: every figure against values
computed by hand from reports made by chat, follow-up steps on the case page and a hand-moved
clock; small counts hidden ("<5", also the second count that would give a hidden one away), erased
cases still counted, an anonymous case never identifiable, the filters, the comparison with the
period before, login and the audit log.

The reports (`make_data`) are shared with tests/test_yearly_report.py and tests/test_browser_stats.py.
What other features record (a department, consequences, an evaluation, a closed status) is set on
the case as they would set it, and its statistics fact refreshed the way their events refresh it."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from html import unescape

import pytest
from sqlalchemy import select

from dialogs import Translator
from stack import Stack
from storage import repo
from storage.models import AuditEntry

UTC = dt.timezone.utc
VERBAL = "Werd net uitgescholden door klant aan balie"  # verbal, counter, citizen
THREAT = "Iemand bedreigde me telefonisch"  # threat, phone, unknown
PHYSICAL = "Een klant duwde me tegen de deur bij de receptie"  # physical, counter, citizen
ANONYMOUS = "Een bezoeker schold me net uit aan de balie en noemde me een oplichter"  # verbal, counter, citizen
DEPARTMENTS = {"departments": ["burgerzaken", "handhaving", "wijkteams"],
               "department_names": {"burgerzaken": "Burgerzaken", "handhaving": "Handhaving"}}
#: Monday 3 March 2025, 10:15 in Amsterdam: when the first reports come in.
START = dt.datetime(2025, 3, 3, 9, 15, tzinfo=UTC)
#: Monday 23 November 2026, 10:15 in Amsterdam: "now" when the pages are looked at.
NOW = dt.datetime(2026, 11, 23, 9, 15, tzinfo=UTC)


@dataclass
class Data:
    """The references made, by group (see `make_data`)."""

    groups: dict[str, list[str]] = field(default_factory=dict)


async def change_case(stack: Stack, reference: str, *, answers: dict | None = None, evaluation: dict | None = None,
                      **columns) -> None:
    """Set what another feature records (answers, evaluation, status) and refresh the case's fact."""
    async with stack.meldbot.sessions() as session, session.begin():
        case = await repo.get_case(session=session, reference=reference)
        if answers:
            case.answers = {**(case.answers or {}), **answers}
        if evaluation is not None:
            case.evaluation = evaluation
        for name, value in columns.items():
            setattr(case, name, value)
        case.updated_at = stack.clock.now
        await repo.refresh_fact(session=session, case=case, now=stack.clock.now)


async def step(stack: Stack, reference: str, name: str, **fields: str) -> None:
    response = await stack.act(reference, "step", step=name, **fields)
    assert response.status == 303, await response.text()


async def erase(stack: Stack, reference: str) -> None:
    """Erasure on request through the case page (confirmation, then the erasure)."""
    csrf = await stack.csrf(f"/cases/{reference}")
    confirm = await stack.client.post(f"/cases/{reference}/erase",
                                      data={"csrf": csrf, "step": "confirm", "reason_code": "request"})
    body = await confirm.text()
    assert confirm.status == 200, body
    token = re.search(r'name="token" value="([^"]+)"', body).group(1)
    done = await stack.client.post(f"/cases/{reference}/erase", allow_redirects=False,
                                   data={"csrf": csrf, "step": "erase", "reason_code": "request", "token": token,
                                         "confirm_reference": reference})
    assert done.status == 303, await done.text()


async def reports(stack: Stack, when: dt.datetime, prefix: str, count: int, story: str, wishes: str) -> list[str]:
    stack.clock.now = when
    return [await stack.report(f"{prefix}{i}", story, wishes, "verzenden") for i in range(count)]


async def make_data(stack: Stack) -> Data:
    """The reports of 2025 and 2026 (the stack starts at START, with DEPARTMENTS configured)."""
    data = Data()
    g = data.groups
    # March 2025: five verbal reports at the counter, each contacted 3 working hours later.
    g["a"] = await reports(stack, START, "a", 5, VERBAL, "1")
    stack.clock.now = START + dt.timedelta(hours=3)
    await stack.log_in()
    for reference in g["a"]:
        await step(stack, reference, "contact_made")
    # June 2025: two threats by phone, never contacted.
    g["b"] = await reports(stack, dt.datetime(2025, 6, 2, 8, 15, tzinfo=UTC), "b", 2, THREAT, "2")

    # February 2026: six verbal reports (Monday 10:15). Contact after 2, 2, 2, 6 and 13 working hours.
    feb = dt.datetime(2026, 2, 2, 9, 15, tzinfo=UTC)
    g["c"] = c = await reports(stack, feb, "c", 6, VERBAL, "1 2")
    stack.clock.now = feb + dt.timedelta(hours=2)
    await stack.log_in()
    for reference in c[:3]:
        await step(stack, reference, "contact_made")
    for reference in c[:5]:
        await step(stack, reference, "aftercare_offered")
    for reference in c[:2]:
        await step(stack, reference, "aftercare_accepted")
    stack.clock.now = feb + dt.timedelta(hours=6)  # 16:15
    await stack.log_in()
    await step(stack, c[3], "contact_made")
    stack.clock.now = feb + dt.timedelta(days=1, hours=5)  # Tuesday 15:15: 6.75 + 6.25 working hours
    await stack.log_in()
    await step(stack, c[4], "contact_made")
    for reference in c[:5]:
        await change_case(stack, reference, answers={"department": "burgerzaken", "consequences": ["absence"]},
                          evaluation={"measures": ["training", "workplace"], "lesson": "", "by": "Coco"})
    await change_case(stack, c[5], answers={"consequences": ["absence"]})
    await erase(stack, c[5])  # on request: the case is gone, its fact still counts

    # May 2026: five threats by phone, a police report wanted each time (Monday 10:15 CEST).
    may = dt.datetime(2026, 5, 4, 8, 15, tzinfo=UTC)
    g["d"] = d = await reports(stack, may, "d", 5, THREAT, "4")
    stack.clock.now = may + dt.timedelta(hours=1)
    await stack.log_in()
    await step(stack, d[0], "contact_made")
    for reference in d[:3]:
        await step(stack, reference, "police_report_filed")
    stack.clock.now = may + dt.timedelta(hours=3)
    await stack.log_in()
    await step(stack, d[1], "contact_made")
    for reference in d:
        await change_case(stack, reference, answers={"department": "handhaving", "consequences": ["damage"]})
    closed = stack.clock.now
    await change_case(stack, d[0], status="closed", closed_at=closed,
                      evaluation={"measures": ["house_rules", "training"], "lesson": "", "by": "Coco"})
    await change_case(stack, d[1], status="closed", closed_at=closed)  # closed without an evaluation

    # September 2026: two pushed at the counter, both injured.
    g["e"] = e = await reports(stack, dt.datetime(2026, 9, 7, 8, 15, tzinfo=UTC), "e", 2, PHYSICAL, "1")
    for reference in e:
        await change_case(stack, reference, answers={"consequences": ["injury"]})

    # Today: one anonymous report, the only one from its department.
    stack.clock.now = NOW
    g["anon"] = [await stack.report("f0", ANONYMOUS, "1 2 6", "verzenden")]
    await change_case(stack, g["anon"][0], answers={"department": "wijkteams"})
    await stack.log_in()
    return data


def figure(body: str, figure_id: str) -> dict[str, tuple[str, ...]]:
    """The table of one figure of a statistics page: row label -> the shown cells."""
    found = re.search(rf'<section class="stats-figure" id="{figure_id}".*?</section>', body, re.S)
    assert found, f"no figure {figure_id}"
    rows = {}
    for row in re.findall(r"<tr><th scope=\"row\">(.*?)</tr>", found.group(0), re.S):
        label, rest = row.split("</th>", 1)
        rows[unescape(label)] = tuple(unescape(c) for c in re.findall(r'<td class="num">(.*?)</td>', rest))
    return rows


def totals(body: str) -> tuple[str, str]:
    """The two totals at the top: this period and the one before."""
    current = re.search(r'<dd class="total-current">(.*?)</dd>', body).group(1)
    previous = re.search(r'<dd class="total-previous">(.*?)</dd>', body).group(1)
    return unescape(current), unescape(previous)


NL = Translator("nl")


def kind(code: str) -> str:
    return NL(f"kind.{code}")


async def audit(stack: Stack, action: str) -> list[AuditEntry]:
    async with stack.meldbot.sessions() as session:
        return list(await session.scalars(select(AuditEntry).where(AuditEntry.action == action)
                                          .order_by(AuditEntry.id)))


async def page(stack: Stack, path: str) -> str:
    response = await stack.client.get(path)
    body = await response.text()
    assert response.status == 200, body
    return body


@pytest.fixture
async def stack(database_url):
    stack = await Stack.start(database_url, organisation=DEPARTMENTS, now=START)
    yield stack
    await stack.close()


@pytest.fixture
async def data(stack):
    return await make_data(stack)


# -- the figures ---------------------------------------------------------------------------------------


@pytest.mark.both_databases
async def test_every_figure_of_the_year_so_far_against_the_period_before(stack, data):
    body = await page(stack, "/stats")
    # January to November 2026 against the same months of 2025.
    assert totals(body) == ("14", "7")
    assert "jan 2026 – nov 2026" in body and "jan 2025 – nov 2025" in body
    months = figure(body, "months")
    assert list(months) == [f"{m} 2026" for m in ("jan", "feb", "mrt", "apr", "mei", "jun", "jul", "aug", "sep",
                                                   "okt", "nov")]
    # 2 in September and 1 in November are hidden (two hidden counts: nothing more to hide); the
    # period before has only one small month (June 2025: 2), so its smallest other (March: 5) is hidden too.
    # Each month against the same month of 2025 (so the table names no other month).
    assert months["feb 2026"] == ("6", "0") and months["mrt 2026"] == ("0", "<5")
    assert months["mei 2026"] == ("5", "0") and months["jun 2026"] == ("0", "<5")
    assert months["sep 2026"] == ("<5", "0") and months["nov 2026"] == ("<5", "0")
    assert months["jan 2026"] == ("0", "0")
    kinds = figure(body, "kinds")
    # Physical (2) is the only small kind: threats (5), the smallest other, are hidden with it.
    assert kinds[kind("verbal")] == ("7", "<5") and kinds[kind("threat")] == ("<5", "<5")
    assert kinds[kind("physical")] == ("<5", "0") and kinds[kind("intimidation")] == ("0", "0")
    places = figure(body, "places")
    assert places[NL("place.counter")] == ("9", "<5") and places[NL("place.phone")] == ("5", "<5")
    assert places[NL("place.street")] == ("0", "0")
    departments = figure(body, "departments")
    assert departments == {"Burgerzaken": ("5", "0"), "Handhaving": ("5", "0"), "wijkteams": ("<5", "0"),
                           "Niet ingevuld": ("<5", "7")}
    perpetrators = figure(body, "perpetrators")
    assert perpetrators[NL("perpetrator.citizen")] == ("9", "<5")
    assert perpetrators[NL("perpetrator.unknown")] == ("5", "<5")
    assert perpetrators[NL("perpetrator.colleague")] == ("0", "0")
    consequences = figure(body, "consequences")
    # Injury (2) is the only small one: damage (5) is hidden with it.
    assert consequences == {NL("consequence.injury"): ("<5", "0"), NL("consequence.damage"): ("<5", "0"),
                            NL("consequence.absence"): ("6", "0")}
    followup = figure(body, "followup")
    # Contacts after 1, 2, 2, 2, 3, 6 and 13 working hours (median 2; 6 of 7 within 8 hours); the
    # period before: five after 3 hours. Long open: reported before 24 October, not closed, not erased.
    assert followup == {
        "Meldingen": ("14", "7"),
        "Eerste contact vastgelegd": ("7", "5"),
        "Mediane tijd tot eerste contact": ("2 uur", "3 uur"),
        "Contact binnen één werkdag": ("6 (86%)", "5 (100%)"),
        "Nazorg aangeboden": ("5", "0"),
        "Nazorg aangenomen": ("<5", "0"),
        "Aangifte gewenst": ("5", "0"),
        "Aangifte gedaan": ("<5", "0"),
        "Reactie aan de pleger verstuurd": ("0", "0"),
        "Langer dan 30 dagen open": ("10", "7"),
    }
    (entry,) = await audit(stack, "view_stats")
    assert entry.actor == "chat:coco" and entry.case_reference is None
    assert entry.detail == {"filters": {"from": "2026-01", "to": "2026-11"}}

    # The charts: no bar for a hidden count, no inline style (the CSP forbids it), no script.
    assert "style=" not in body and "<script" not in body
    kinds = re.search(r'<svg class="chart chart-bars" id="chart-kinds".*?</svg>', body, re.S).group(0)
    assert 'role="img"' in kinds and f"aria-label=\"{NL('stats.per_kind')}." in kinds
    # One bar: verbal this period. Threats, physical violence and the whole period before are hidden.
    bars = re.findall(r'<rect class="bar (bar-current|bar-previous)"[^>]*><title>([^<]*)</title>', kinds)
    assert [(css, unescape(title)) for css, title in bars] == [
        ("bar-current", f"{kind('verbal')}, jan 2026 – nov 2026: 7")]
    hidden = re.findall(r'<text class="chart-hidden"[^>]*>&lt;5<title>([^<]*)</title>', kinds)
    assert len(hidden) == 4  # threat (both periods), physical, verbal before
    months = re.search(r'id="chart-months".*?</svg>', body, re.S).group(0)
    assert len(re.findall(r'<rect class="bar bar-current"', months)) == 2  # February and May
    assert len(re.findall(r'<rect class="bar bar-previous"', months)) == 0


@pytest.mark.both_databases
async def test_filters_erased_cases_the_anonymous_department_and_the_export_form(stack, data):
    erased = data.groups["c"][5]
    async with stack.meldbot.sessions() as session:
        assert await repo.get_case(session=session, reference=erased) is None
    # February 2026 alone, against February 2025: six reports, the erased one included.
    body = await page(stack, "/stats?from=2026-02&to=2026-02")
    assert totals(body) == ("6", "0")
    assert figure(body, "kinds")[kind("verbal")] == ("6", "0")
    assert figure(body, "consequences")[NL("consequence.absence")] == ("6", "0")
    assert list(figure(body, "months")) == ["feb 2026"]
    # One department.
    body = await page(stack, "/stats?department=burgerzaken")
    assert totals(body) == ("5", "0")
    assert figure(body, "followup")["Nazorg aangeboden"] == ("5", "0")
    assert 'value="burgerzaken" selected' in body
    # The only report from its department is anonymous: "<5" everywhere, never a 1.
    body = await page(stack, "/stats?department=wijkteams")
    assert totals(body) == ("<5", "0")
    cells = [cell for name in ("months", "kinds", "places", "departments", "perpetrators", "consequences",
                               "followup") for row in figure(body, name).values() for cell in row]
    assert "<5" in cells and not [c for c in cells if c.split(" ")[0] == "1"]
    assert ">1<" not in body
    # Bad values are ignored: the default period, no kind, no department (never an error page).
    for query in ("from=2026-13&to=garbage&kind=nonsense&department=evil", "from=2026-11&to=2026-01",
                  "from=1999-01", "from=1900-01&to=2026-11", "to=2099-01"):
        assert totals(await page(stack, f"/stats?{query}")) == ("14", "7"), query
    filters = [e.detail["filters"] for e in await audit(stack, "view_stats")]
    assert filters[:3] == [{"from": "2026-02", "to": "2026-02"},
                           {"from": "2026-01", "to": "2026-11", "department": "burgerzaken"},
                           {"from": "2026-01", "to": "2026-11", "department": "wijkteams"}]
    assert filters[3] == {"from": "2026-01", "to": "2026-11"}


@pytest.mark.both_databases
async def test_a_kind_filter_counts_reports_of_that_kind(stack, data):
    body = await page(stack, "/stats?kind=threat")
    assert totals(body) == ("5", "<5")  # May 2026 against June 2025 (both in January to November)
    assert figure(body, "places")[NL("place.phone")] == ("5", "<5")
    assert figure(body, "kinds")[kind("threat")] == ("5", "<5")
    assert figure(body, "followup")["Aangifte gewenst"] == ("5", "0")
    assert 'value="threat" selected' in body
    (entry,) = await audit(stack, "view_stats")
    assert entry.detail == {"filters": {"from": "2026-01", "to": "2026-11", "kind": "threat"}}


@pytest.mark.both_databases
async def test_the_page_offers_the_case_export_and_links_the_yearly_overview(stack, data):
    body = await page(stack, "/stats?lang=en")
    assert "<h1>Statistics</h1>" in body and "Reports per month" in body
    form = re.search(r'<form method="post" action="/stats/export".*?</form>', body, re.S).group(0)
    csrf = await stack.csrf("/stats")
    assert f'name="csrf" value="{csrf}"' in form
    assert re.findall(r'<option value="(\w*)"', form) == ["csv", "xlsx", "", "2026", "2025"]
    assert 'type="checkbox" name="personal" value="1"' in form and "With personal data" in form
    assert '<a href="/stats/year/2026">Yearly overview 2026</a>' in body
    assert '<a href="/stats" aria-current="page">Statistics</a>' in body


async def test_without_a_session_only_the_login_page(database_url):
    stack = await Stack.start(database_url)
    try:
        await stack.report()
        for path in ("/stats", "/stats/year/2026", "/stats?kind=threat"):
            response = await stack.client.get(path)
            body = await response.text()
            assert response.status == 401 and "Log eerst in" in body, path
            assert "stats-figure" not in body and "total-current" not in body
        assert await audit(stack, "view_stats") == [] and await audit(stack, "view_yearly") == []
    finally:
        await stack.close()
