"""The summary with the wishes folded in: send, tick, untick, tick and send, change, back, cancel."""

from __future__ import annotations

import pytest

from dialogs import SubmitReport, submitted
from dialogs.categories import WISHES
from helpers import CONTEXT, Chat, ticked

NL_STORY = "ik werd net uitgescholden aan de balie"
EN_STORY = "I was just sworn at at the front desk"


def at_summary(story: str = NL_STORY) -> Chat:
    chat = Chat()
    chat.send(story)
    assert chat.state.step == "summary", chat.said
    return chat


def sent(chat: Chat) -> SubmitReport:
    effects = [e for e in chat.last.effects if isinstance(e, SubmitReport)]
    assert len(effects) == 1, chat.said
    return effects[0]


def confirmation(chat: Chat) -> str:
    (reply,) = submitted(chat.state.language, "MB-ABC-DEF", sent(chat).draft, CONTEXT)
    return reply.text


# -- how many messages ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("story", "send"), [(NL_STORY, "verzenden"), (EN_STORY, "send")])
def test_a_story_that_names_kind_and_place_takes_two_messages(story, send):
    chat = Chat()
    chat.send(story)
    assert chat.state.step == "summary" and not chat.last.effects
    chat.send(send)
    effect = sent(chat)
    assert chat.messages == 2
    assert effect.draft.kinds == ["verbal"] and effect.draft.place == "counter"
    assert chat.state.step == "idle" and chat.state.draft is None


@pytest.mark.parametrize(("messages", "language"), [
    (["er gebeurde iets vervelends", "2 11", "verzenden"], "nl"),
    (["something unpleasant happened", "1 11", "send"], "en"),
])
def test_a_story_without_kind_and_place_takes_three_messages(messages, language):
    chat = Chat()
    chat.send(messages[0])
    assert chat.state.step == "details"
    chat.send(messages[1])
    assert chat.state.step == "summary" and not chat.last.effects
    chat.send(messages[2])
    assert sent(chat).draft.place == "counter" and chat.messages == 3
    assert chat.state.language == language


def test_melden_first_adds_one_message():
    chat = Chat()
    for text in ("melden", NL_STORY, "verzenden"):
        chat.send(text)
    assert sent(chat).draft.story == NL_STORY and chat.messages == 3


# -- the tick list ----------------------------------------------------------------------------------------

def test_the_summary_shows_report_lines_then_the_wishes_with_contact_ticked():
    chat = at_summary()
    (summary,) = [r for r in chat.last.replies if r.options]
    assert [o.number for o in summary.options] == list(range(1, len(WISHES) + 1))
    assert ticked(chat.last) == [1]
    plain = summary.plain()
    assert plain.index("6. Gevolgen") < plain.index("Wat heb je nodig?") < plain.index("[x] 1. Contact")
    # Aftercare and police say what ticking them does.
    assert "[ ] 2. Nazorg: binnen 72 uur neemt iemand contact met je op" in plain
    assert "[ ] 4. Aangifte doen: de coördinator helpt je, en je gebruikt het adres van je werk" in plain
    assert "'niet 2'" in summary.hint and "'wijzig 3'" in summary.hint


def test_english_tick_list_labels():
    chat = at_summary(EN_STORY)
    said = chat.said
    assert "[x] 1. Contact with the coordinator" in said
    assert "[ ] 2. Aftercare: someone contacts you within 72 hours" in said
    assert "[ ] 4. File a police report: the coordinator helps you" in said


def test_a_number_ticks_and_answers_briefly():
    chat = at_summary()
    chat.send("2")
    assert chat.draft.aftercare == "yes" and chat.state.step == "summary"
    assert ticked(chat.last) == [1, 2]
    said = chat.said
    assert said.startswith("Aangevinkt: 2. Nazorg")
    assert "Kijk even of dit klopt" not in said and "Wat er gebeurde" not in said  # not the whole summary
    assert "Typ 'verzenden'" in said
    chat.send("4 6")
    assert ticked(chat.last) == [1, 2, 4, 6]  # adds to what is ticked
    assert chat.draft.police_report is True and chat.draft.anonymous is True
    chat.send("3")
    assert ticked(chat.last) == [1, 3, 4, 6] and chat.draft.aftercare == "later"  # 3 unticks 2
    chat.send("2")
    assert ticked(chat.last) == [1, 2, 4, 6] and chat.draft.aftercare == "yes"  # and 2 unticks 3


@pytest.mark.parametrize(("text", "field", "value"), [
    ("nazorg", "aftercare", "yes"), ("aftercare", "aftercare", "yes"), ("aangifte", "police_report", True),
    ("police report", "police_report", True), ("anoniem", "anonymous", True), ("anonymous", "anonymous", True),
    ("politie was er", "police_came", True), ("police came", "police_came", True),
    ("misschien later", "aftercare", "later"), ("ik wil aangifte doen", "police_report", True),
])
def test_words_tick_too(text, field, value):
    chat = at_summary()
    before = getattr(chat.draft, field)
    chat.send(text)
    assert before != value and getattr(chat.draft, field) == value
    assert chat.state.step == "summary" and not chat.last.effects


def test_contact_word_ticks_contact_again():
    chat = at_summary()
    chat.send("geen contact")
    assert chat.draft.contact is False and ticked(chat.last) == []
    chat.send("contact")
    assert chat.draft.contact is True and ticked(chat.last) == [1]


@pytest.mark.parametrize("untick", ["niet 2", "geen 2", "not 2", "no 2", "2 uit", "untick 2"])
def test_numbers_untick_and_leave_aftercare_not_asked(untick):
    chat = at_summary()
    chat.send("2 4")
    chat.send(untick)
    assert chat.draft.aftercare is None  # not asked: the check-in still comes
    assert chat.draft.police_report is True and ticked(chat.last) == [1, 4]
    assert chat.said.startswith("Uitgevinkt: 2. Nazorg")


@pytest.mark.parametrize(("text", "language"), [("geen nazorg", "nl"), ("no aftercare", "en")])
def test_declining_aftercare_in_words_is_an_explicit_no(text, language):
    chat = at_summary(NL_STORY if language == "nl" else EN_STORY)
    chat.send("2")
    chat.send(text)
    assert chat.draft.aftercare == "no" and ticked(chat.last) == [1]
    expected = "Genoteerd: je wilt geen nazorg." if language == "nl" else "Noted: you don't want aftercare."
    assert expected in chat.said


@pytest.mark.parametrize(("tick", "untick", "field"), [
    ("6", "niet anoniem", "anonymous"), ("4", "no police report", "police_report"),
    ("4", "geen aangifte", "police_report"), ("5", "politie was er niet", "police_came"),
])
def test_negated_words_untick(tick, untick, field):
    chat = at_summary()
    chat.send(tick)
    assert getattr(chat.draft, field) is True
    chat.send(untick)
    assert getattr(chat.draft, field) is False and ticked(chat.last) == [1]


def test_unticking_what_is_not_ticked_says_nothing_changed():
    chat = at_summary()
    chat.send("niet 3")
    assert chat.draft.aftercare is None and chat.said.startswith("Dat stond al zo.")


def test_a_tick_and_an_untick_in_one_message():
    chat = at_summary()
    chat.send("2 niet 1")
    assert chat.draft.aftercare == "yes" and chat.draft.contact is False
    assert ticked(chat.last) == [2]


def test_out_of_range_numbers_explain_and_change_nothing():
    chat = at_summary()
    before = chat.draft.to_dict()
    chat.send("2 9")
    assert "1 tot en met 6" in chat.said and chat.draft.to_dict() == before and chat.state.step == "summary"


def test_a_sentence_that_mentions_a_wish_is_no_tick():
    chat = at_summary()
    chat.send("hij zei dat hij contact met mijn leidinggevende zou opnemen")
    assert "aan je verhaal toegevoegd" in chat.said and "leidinggevende" in chat.draft.story
    assert chat.draft.contact is None and chat.state.step == "summary"


# -- sending ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("word", ["verzenden", "ja", "ok", "versturen"])
def test_send_and_yes_words_send(word):
    chat = at_summary()
    chat.send(word)
    draft = sent(chat).draft
    assert draft.contact is True and draft.police_report is False and draft.aftercare is None


@pytest.mark.parametrize(("text", "field", "value"), [
    ("2 verzenden", "aftercare", "yes"), ("nazorg en verzenden", "aftercare", "yes"),
    ("4 send", "police_report", True), ("anonymous and send", "anonymous", True),
    ("niet 1 verzenden", "contact", False),
])
def test_ticks_followed_by_the_send_word_tick_and_send_in_one_turn(text, field, value):
    chat = at_summary()
    chat.send(text)
    assert getattr(sent(chat).draft, field) == value
    assert chat.state.step == "idle" and chat.messages == 2


def test_a_negated_send_word_does_not_send():
    chat = at_summary()
    chat.send("niet verzenden")
    assert not chat.last.effects and chat.state.step == "summary" and "begreep ik niet" in chat.said


def test_the_confirmation_says_what_happens_for_police_and_aftercare():
    chat = at_summary()
    chat.send("2 4 verzenden")
    text = confirmation(chat)
    assert "Aangifte doe je het liefst binnen twee werkdagen" in text
    assert "bedrijfsmaatschappelijk werk" in text
    assert sent(chat).draft.aftercare == "yes"
    chat = at_summary()
    chat.send("verzenden")
    assert "Aangifte" not in confirmation(chat)
    chat = at_summary(EN_STORY)
    chat.send("geen contact en verzenden")
    assert "You said you don't need contact" in confirmation(chat)


# -- change, back, cancel -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("story", "change", "answer", "title"), [
    (NL_STORY, "wijzig 2", "2", "Kijk even of dit klopt"),
    (EN_STORY, "change 2", "2", "Please check that this is right"),
])
def test_change_a_line_then_back_at_the_summary_with_the_ticks_kept(story, change, answer, title):
    chat = at_summary(story)
    chat.send("4")
    chat.send(change)
    assert chat.state.step == "kinds"
    chat.send(answer)
    assert chat.state.step == "summary" and title in chat.said
    assert chat.draft.kinds == ["threat"] and ticked(chat.last) == [1, 4]


def test_back_at_the_summary_goes_to_the_previous_question():
    chat = Chat()
    chat.send("er gebeurde iets vervelends")
    chat.send("2 11")
    chat.send("2")
    chat.send("terug")
    assert chat.state.step == "details" and chat.draft.aftercare == "yes"
    chat.send("1")  # the kinds again (the place is known)
    assert chat.state.step == "summary" and ticked(chat.last) == [1, 2] and chat.draft.kinds == ["verbal"]
    chat = at_summary(EN_STORY)
    chat.send("back")
    assert chat.state.step == "story"


@pytest.mark.parametrize(("stop", "yes", "no"), [("stop", "ja", "nee"), ("cancel", "yes", "no")])
def test_cancel_at_the_summary(stop, yes, no):
    chat = at_summary()
    chat.send("2")
    chat.send(stop)
    assert chat.state.step == "confirm_cancel"
    chat.send(no)
    assert chat.state.step == "summary" and chat.draft.aftercare == "yes" and ticked(chat.last) == [1, 2]
    chat.send(stop)
    chat.send(yes)
    assert chat.state.step == "idle" and chat.state.draft is None and not chat.last.effects
