"""The reporter's department (`[organisation] departments`): asked once on the first report's summary
(skippable by just sending), remembered for the next reports, changeable with `wijzig 7` or `afdeling`
at any moment, on the Teams form too, and counted in the statistics. Without departments nothing changes."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule
from sqlalchemy import select

from bot.adapters.teams.cards import report_card
from dialogs import State, SubmitReport, UserInput, step
from dialogs.rights import StoredData, my_data
from helpers import CONTEXT, NOW, Chat
from stack import Stack
from storage import repo
from storage.models import CaseFact
from test_dialogue_machine import Conversation

DEPARTMENTS = (("burgerzaken", "Burgerzaken"), ("handhaving", "Handhaving"), ("economie", "Économie & Cultuur"))
WITH = replace(CONTEXT, departments=DEPARTMENTS)
STORY = "ik werd net uitgescholden aan de balie"  # names kind and place: straight to the summary
EN_STORY = "I was just sworn at at the front desk"
PROMPT = "bij welke afdeling werk je?"


def sent(chat: Chat) -> SubmitReport:
    effects = [e for e in chat.last.effects if isinstance(e, SubmitReport)]
    assert len(effects) == 1, chat.said
    return effects[0]


def report(chat: Chat, *messages: str) -> tuple[SubmitReport, int]:
    """A whole report; returns what was sent and how many messages it took."""
    before = chat.messages
    for message in messages:
        chat.send(message)
    return sent(chat), chat.messages - before


# -- how many messages ------------------------------------------------------------------------------------

def test_naming_the_department_costs_the_first_report_one_message_and_later_reports_none():
    chat = Chat(context=WITH)
    chat.send(STORY)
    assert chat.state.step == "summary"
    assert "7. Afdeling: niet ingevuld (mag)" in chat.said and PROMPT in chat.said
    assert "Typ de naam (Burgerzaken, Handhaving, Économie & Cultuur), of 'wijzig 7' voor de lijst." in chat.said
    chat.send("Handhaving")
    assert "Genoteerd: je afdeling is Handhaving." in chat.said and "7. Afdeling: Handhaving" in chat.said
    assert PROMPT not in chat.said and chat.state.step == "summary"
    chat.send("verzenden")
    first = sent(chat)
    assert chat.messages == 3 and first.draft.department == "handhaving"
    assert first.draft.to_dict()["department"] == "handhaving"  # the case's answers (minus the story)

    second, messages = report(chat, "Hij bedreigde me aan de telefoon", "verzenden")
    assert messages == 2 and second.draft.department == "handhaving"
    assert "7. Afdeling: Handhaving" in "\n".join(r.plain() for r in chat.turns[-2].replies)
    assert PROMPT not in "\n".join(r.plain() for r in chat.turns[-2].replies)


def test_sending_without_answering_skips_it_for_good_and_costs_nothing():
    chat = Chat(context=WITH)
    first, messages = report(chat, STORY, "verzenden")
    assert messages == 2 and first.draft.department is None
    assert chat.state.department_asked and chat.state.department is None
    chat.send("Hij bedreigde me aan de telefoon")
    assert "7. Afdeling: niet ingevuld (mag)" in chat.said and PROMPT not in chat.said
    chat.send("verzenden")
    assert sent(chat).draft.department is None and chat.messages == 4


def test_overslaan_on_the_first_summary_skips_it_and_tick_and_send_still_sends():
    chat = Chat(context=WITH)
    chat.send(STORY)
    chat.send("overslaan")
    assert "dan laat ik de afdeling open" in chat.said and PROMPT not in chat.said
    assert chat.state.step == "summary" and chat.state.department_asked
    chat.send("2 verzenden")
    assert sent(chat).draft.aftercare == "yes" and sent(chat).draft.department is None
    # Without the prompt, `overslaan` on the summary says what it always said.
    chat.send("Hij bedreigde me aan de telefoon")
    chat.send("overslaan")
    assert "Typ 'verzenden' om de melding te versturen" in chat.said


def test_a_cancelled_first_report_asks_again_next_time():
    chat = Chat(context=WITH)
    chat.send(STORY)
    chat.send("stop")
    chat.send("ja")
    assert not chat.state.department_asked
    chat.send("Hij bedreigde me aan de telefoon")
    assert PROMPT in chat.said


# -- the answers it accepts -----------------------------------------------------------------------------

@pytest.mark.parametrize(("answer", "code"), [
    ("2", "handhaving"), ("handhaving", "handhaving"), ("HANDHAVING", "handhaving"), ("economie", "economie"),
    ("Économie & Cultuur", "economie"), ("economie en cultuur", "economie"), ("ECONOMIE CULTUUR", "economie"),
    ("burgerzaken en handhaving", None),
    ("ik werk bij de afdeling burgerzaken", "burgerzaken"), ("4", None), ("0", None),
    ("de kantine", None),
])
def test_the_list_takes_the_number_the_code_or_the_name(answer, code):
    chat = Chat(context=WITH)
    chat.send(STORY)
    chat.send("wijzig 7")
    assert chat.state.step == "department"
    assert [o.label for o in chat.last.replies[-1].options] == ["Burgerzaken", "Handhaving", "Économie & Cultuur"]
    chat.send(answer)
    if code is None and answer == "0":
        # `0` is "none" everywhere: the department is left empty on purpose.
        assert chat.state.step == "summary" and chat.state.department is None and chat.state.department_asked
        assert "Genoteerd: geen afdeling." in chat.said
    elif code is None:
        assert chat.state.step == "department" and chat.state.department is None
        assert "Die afdeling ken ik niet. Typ een nummer van 1 tot en met 3, of de naam." in chat.said
    else:
        assert chat.state.step == "summary" and chat.state.department == code == chat.draft.department


def test_on_the_summary_a_name_answers_but_a_number_ticks_a_wish():
    chat = Chat(context=WITH)
    chat.send(STORY)
    chat.send("2")
    assert chat.draft.aftercare == "yes" and chat.state.department is None
    chat.send("ik werk bij Burgerzaken")
    assert chat.state.department == "burgerzaken" and chat.draft.department == "burgerzaken"
    chat.send("wijzig 8")
    assert "Kies een nummer van 1 tot en met 7." in chat.said


def test_geen_empties_it_and_overslaan_keeps_it():
    chat = Chat(context=WITH)
    chat.send("afdeling handhaving")
    assert chat.state.department == "handhaving" and chat.state.step == "idle"
    chat.send("afdeling")
    assert chat.state.step == "department" and chat.last.replies[-1].options[1].selected
    chat.send("overslaan")
    assert "Je afdeling blijft Handhaving." in chat.said
    assert chat.state.step == "idle" and chat.state.department == "handhaving"
    chat.send("afdeling")
    chat.send("geen")
    assert chat.state.department is None and chat.state.department_asked and chat.state.step == "idle"
    chat.send(STORY)
    assert PROMPT not in chat.said and "7. Afdeling: niet ingevuld (mag)" in chat.said


# -- the command, at any moment ---------------------------------------------------------------------------

def test_afdeling_outside_a_report_is_remembered_for_the_next_one():
    chat = Chat(context=WITH)
    chat.send("afdeling")
    assert chat.state.step == "department" and chat.state.draft is None
    chat.send("1")
    assert "Genoteerd: je afdeling is Burgerzaken." in chat.said
    assert chat.state.step == "idle" and chat.state.draft is None
    effect, messages = report(chat, STORY, "verzenden")
    assert messages == 2 and effect.draft.department == "burgerzaken"


def test_a_story_typed_at_the_department_question_outside_a_report_is_a_story():
    chat = Chat(context=WITH)
    chat.send("afdeling")
    chat.send(STORY)
    assert chat.state.step == "summary" and chat.draft.story == STORY and chat.state.department is None


def test_stop_at_the_department_question_outside_a_report_only_ends_the_question():
    chat = Chat(context=WITH)
    chat.send("afdeling")
    chat.send("stop")
    assert chat.state.step == "idle" and "dan laat ik de afdeling open" in chat.said
    assert not chat.state.department_asked  # not answered: the first summary still asks


def test_afdeling_in_the_middle_of_a_report_returns_to_the_question_it_interrupted():
    chat = Chat(context=WITH)
    chat.send("er gebeurde iets vervelends")
    assert chat.state.step == "details"
    chat.send("afdeling")
    assert chat.state.step == "department"
    chat.send("Burgerzaken")
    assert chat.state.step == "details" and chat.draft.department == "burgerzaken"
    chat.send("2 11")
    assert chat.state.step == "summary" and "7. Afdeling: Burgerzaken" in chat.said and PROMPT not in chat.said
    chat.send("afdeling economie")  # at once, in one message
    assert chat.state.step == "summary" and chat.draft.department == "economie"
    assert "7. Afdeling: Économie & Cultuur" in chat.said
    chat.send("verzenden")
    assert sent(chat).draft.department == "economie" and chat.messages == 6


def test_stop_at_the_department_question_in_a_report_still_asks_to_stop_the_report():
    chat = Chat(context=WITH)
    chat.send(STORY)
    chat.send("wijzig 7")
    chat.send("stop")
    assert chat.state.step == "confirm_cancel"
    chat.send("nee")
    assert chat.state.step == "department"
    chat.send("terug")
    assert chat.state.step == "summary"


def test_a_story_that_starts_with_the_word_is_not_the_command():
    chat = Chat(context=WITH)
    chat.send("afdeling burgerzaken kreeg vandaag een boze klant aan de balie die ging schelden")
    assert chat.state.step == "summary" and chat.state.department is None
    assert chat.draft.story.startswith("afdeling burgerzaken kreeg")


def test_in_english():
    chat = Chat(context=WITH)
    chat.send(EN_STORY)
    assert "7. Department: not given (optional)" in chat.said
    assert "which department do you work in?" in chat.said and "'change 7' for the list" in chat.said
    chat.send("change 7")
    assert "Which department do you work in?" in chat.said
    chat.send("skip")
    assert "I'll leave the department open" in chat.said
    chat.send("department Enforcement")  # names none: an ordinary message on the summary
    assert chat.state.department is None
    chat.send("department: handhaving")
    assert "Noted: your department is Handhaving." in chat.said
    chat.send("help")
    assert "• department: give or change your department" in chat.said


def test_help_mentions_it_only_with_departments():
    with_departments, without = Chat(context=WITH), Chat()
    with_departments.send("help")
    without.send("help")
    assert "• afdeling: je afdeling opgeven of wijzigen (voor de cijfers)\nIn acuut gevaar? Bel 112." in \
        with_departments.said
    assert "afdeling" not in without.said


def test_a_remembered_department_that_was_removed_is_asked_again():
    state = State(department="oud", department_asked=True, introduced=True)
    chat = Chat(context=WITH, state=state)
    chat.send(STORY)
    assert chat.draft.department is None and PROMPT in chat.said and chat.state.department is None


def test_my_data_shows_the_remembered_department():
    (intro, *_rest) = my_data("nl", StoredData(department="Handhaving"))
    assert "Je afdeling, die ik bij je volgende meldingen gebruik voor de cijfers: Handhaving." in intro.text
    (intro, *_rest) = my_data("nl", StoredData())
    assert "afdeling" not in intro.text


# -- without departments nothing changes -------------------------------------------------------------

def test_without_departments_there_is_no_line_no_question_and_no_command():
    chat = Chat()
    chat.send(STORY)
    assert "7." not in chat.said and "afdeling" not in chat.said.lower()
    chat.send("wijzig 7")
    assert "Kies een nummer van 1 tot en met 6." in chat.said
    chat.send("verzenden")
    assert sent(chat).draft.department is None and not chat.state.department_asked
    # The words are read as they always were: like any other word that is no command.
    for words, other_words in (("afdeling", "bureau"), ("afdeling burgerzaken", "bureau burgerzaken")):
        plain, other = Chat(), Chat()
        plain.send(words)
        other.send(other_words)
        assert plain.state.step == other.state.step and plain.state.department is None
        assert [r.text for r in plain.last.replies] == [r.text for r in other.last.replies]
        assert plain.state.draft.story == ("" if words == "afdeling" else words)
    chat = Chat()
    turn = chat.send("melden")
    assert turn.replies[-1].offer_form and turn.replies[-1].form_values is None


# -- the form ---------------------------------------------------------------------------------------------

def test_the_form_offers_the_departments_with_the_remembered_one_and_its_answer_is_remembered():
    chat = Chat(context=WITH)
    turn = chat.send("melden")
    values = turn.replies[-1].form_values
    assert values == {"departments": [["burgerzaken", "Burgerzaken"], ["handhaving", "Handhaving"],
                                      ["economie", "Économie & Cultuur"]], "department": None}
    form = {"meldbot": "report", "form_id": "f1", "story": "Hij bedreigde me aan de telefoon", "kinds": "threat",
            "department": "handhaving"}
    turn = step(chat.state, UserInput("", NOW, form=form), WITH)
    (effect,) = turn.effects
    assert effect.draft.department == "handhaving"
    assert turn.state.department == "handhaving" and turn.state.department_asked
    chat.state = turn.state
    assert chat.send("melden").replies[-1].form_values["department"] == "handhaving"
    # A card without the field (an older one) keeps the remembered department; an unknown code is none.
    old = {k: v for k, v in form.items() if k != "department"} | {"form_id": "f3"}
    kept = step(chat.state, UserInput("", NOW, form=old), WITH)
    assert kept.effects[0].draft.department == "handhaving" and kept.state.department == "handhaving"
    odd = step(chat.state, UserInput("", NOW, form=dict(form, form_id="f4", department=["x", {"y": 1}])), WITH)
    assert odd.effects[0].draft.department is None and odd.state.department is None
    # Without departments the form's department field is ignored.
    plain = step(State(), UserInput("", NOW, form=form), CONTEXT)
    assert plain.effects[0].draft.department is None and not plain.state.department_asked


def test_the_card_has_a_department_choice_only_with_departments():
    values = {"departments": [["burgerzaken", "Burgerzaken"], ["handhaving", "Handhaving"]], "department": "handhaving"}
    card = report_card("nl", "form-1", values)
    ids = [element.get("id") for element in card["body"]]
    assert ids[-2:] == ["department", "wishes"]
    choice = card["body"][ids.index("department")]
    assert choice["choices"] == [{"title": "Burgerzaken", "value": "burgerzaken"},
                                 {"title": "Handhaving", "value": "handhaving"}]
    assert choice["value"] == "handhaving" and choice["label"].startswith("Je afdeling")
    assert "value" not in report_card("nl", "form-2", dict(values, department="weg"))["body"][ids.index("department")]
    assert "department" not in [e.get("id") for e in report_card("nl", "form-3")["body"]]
    assert "department" not in [e.get("id") for e in report_card("nl", "form-4", {"story": "x"})["body"]]


# -- random conversations with departments ------------------------------------------------------------------

class DepartmentConversation(Conversation):
    """The random conversations of test_dialogue_machine, with departments and their words."""

    @rule(text=st.sampled_from(["afdeling", "afdeling 2", "department", "wijzig 7", "change 7", "Handhaving",
                                "burgerzaken", "geen", "1", "3", "overslaan", "terug", "stop", "afdeling x",
                                "verzenden", "ik werk bij economie"]))
    def department_words(self, text):
        self.send(text)

    def send(self, text, files=(), minutes=0):
        self.now += dt.timedelta(minutes=minutes)
        before = self.state
        turn = step(self.state, UserInput(text, self.now, tuple(files)), WITH)
        assert turn.replies or turn.effects, "every message gets an answer"
        for effect in turn.effects:
            if isinstance(effect, SubmitReport):
                assert before.step == "summary" and before.draft is not None
                assert effect.draft.department in (None, *(code for code, _ in DEPARTMENTS))
                assert effect.draft.department == turn.state.department
                assert turn.state.department_asked
        self._check_nothing_lost(before, turn)
        self.state = State.from_dict(json.loads(json.dumps(turn.state.to_dict())))
        return turn

    @invariant()
    def valid_state(self):
        s = self.state
        assert s.department in (None, *(code for code, _ in DEPARTMENTS))
        if s.department is not None:
            assert s.department_asked
        if s.draft is not None and s.step != "idle":
            assert s.draft.department == s.department
        if s.step == "department" and s.draft is None:
            assert s.department_return is None
            return  # asked outside a report
        Conversation.valid_state(self)


TestDepartmentConversation = DepartmentConversation.TestCase
TestDepartmentConversation.settings = settings(max_examples=60, stateful_step_count=30, deadline=None,
                                               suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.data_too_large])


# -- the whole way: configuration, chat, case answers and the statistics -------------------------------------

@pytest.fixture
async def stack(database_url):
    stack = await Stack.start(database_url, organisation={
        "departments": ["burgerzaken", "handhaving"], "department_names": {"burgerzaken": "Burgerzaken"}})
    try:
        yield stack
    finally:
        await stack.close()


async def case_and_fact(stack, reference: str):
    async with stack.meldbot.sessions() as session:
        case = await repo.get_case(session=session, reference=reference)
        fact = await session.scalar(select(CaseFact).where(CaseFact.case_id == case.id))
        return case, fact


@pytest.mark.both_databases
async def test_the_department_reaches_the_case_and_the_statistics(stack):
    said = await stack.say("anna", STORY)
    assert "7. Afdeling: niet ingevuld (mag)" in said and "Typ de naam (Burgerzaken, handhaving)" in said
    said = await stack.say("anna", "handhaving")
    assert "7. Afdeling: handhaving" in said  # no display name configured: the code
    reference = await stack.report("anna", "verzenden")
    case, fact = await case_and_fact(stack, reference)
    assert case.answers["department"] == "handhaving" and fact.department == "handhaving"
    # The next report, anonymous, costs two messages and carries the remembered department.
    said = await stack.say("anna", "Hij bedreigde me aan de telefoon")
    assert "7. Afdeling: handhaving" in said and "bij welke afdeling" not in said
    reference = await stack.report("anna", "anoniem verzenden")
    case, fact = await case_and_fact(stack, reference)
    assert case.anonymous and fact.anonymous and fact.department == "handhaving"
    # Someone who sends without naming it: no department, and not asked again.
    reference = await stack.report("bob", STORY, "verzenden")
    case, fact = await case_and_fact(stack, reference)
    assert case.answers["department"] is None and fact.department is None
    assert "bij welke afdeling" not in await stack.say("bob", STORY)


# -- Teams: the real adapter builds the card from what the dialogue sends along ------------------------------

@pytest.fixture
async def teams(keys, tmp_path):
    from teams_harness import TeamsWorld

    world = TeamsWorld(keys, tmp_path)
    base = world.settings

    def with_departments(**values):
        settings = base(**values)
        organisation = settings.organisation.model_copy(update={
            "departments": ["burgerzaken", "handhaving"], "department_names": {"burgerzaken": "Burgerzaken"}})
        return settings.model_copy(update={"organisation": organisation})

    world.settings = with_departments
    try:
        yield world
    finally:
        await world.close()


async def test_the_teams_form_offers_the_departments_and_files_the_choice(teams):
    from teams_harness import reference_in

    await teams.start()
    await teams.say("melden")
    cards = [r for r in teams.connector.requests if r["activity"].get("attachments")]
    card = cards[-1]["activity"]["attachments"][0]["content"]
    fields = {element.get("id"): element for element in card["body"]}
    assert fields["department"]["choices"] == [{"title": "Burgerzaken", "value": "burgerzaken"},
                                               {"title": "handhaving", "value": "handhaving"}]
    assert "value" not in fields["department"]  # nothing remembered yet
    data = dict(card["actions"][0]["data"], story="Hij bedreigde me aan de telefoon", kinds="threat",
                place="phone", wishes="contact", department="burgerzaken")
    reference = reference_in(await teams.say(None, value=data))
    async with teams.app.sessions() as session:
        case = await repo.get_case(session=session, reference=reference)
    assert case.answers["department"] == "burgerzaken"
    # The next card starts with the remembered department; a text report asks nothing more.
    await teams.say("melden")
    cards = [r for r in teams.connector.requests if r["activity"].get("attachments")]
    fields = {element.get("id"): element for element in cards[-1]["activity"]["attachments"][0]["content"]["body"]}
    assert fields["department"]["value"] == "burgerzaken"
    await teams.say("stop")
    await teams.say("ja")
    said = " ".join(await teams.say("Een bezoeker schold me net uit aan de balie"))
    assert "7. Afdeling: Burgerzaken" in said and "bij welke afdeling" not in said
