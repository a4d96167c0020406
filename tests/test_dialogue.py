"""Every path of the report dialogue, in Dutch and English."""

from __future__ import annotations

import datetime as dt

import pytest

from dialogs import AddEvidence, DiscardDraft, ListMyReports, State, SubmitReport, record_submission
from dialogs.text import MAX_MESSAGE_CHARS
from helpers import AMS, NOW, Chat, photo


def submitted(chat: Chat) -> SubmitReport:
    effects = [e for e in chat.last.effects if isinstance(e, SubmitReport)]
    assert len(effects) == 1, chat.said
    return effects[0]


# -- the minimal report: at most 3 messages ----------------------------------------------------------

MINIMAL = [
    ("nl", ["ik werd net uitgescholden aan de balie", "verzenden"]),
    ("nl", ["Een man schreeuwde tegen me en zei dat hij me zou opwachten", "1", "verzenden"]),
    ("nl", ["er gebeurde iets vervelends", "2 11", "verzenden"]),
    ("nl", ["Hij dreigde me telefonisch", "ja"]),
    ("en", ["I was just sworn at at the front desk", "send"]),
    ("en", ["A man threatened me", "2", "1 send"]),
    ("en", ["something unpleasant happened", "1 12", "send"]),
]


@pytest.mark.parametrize(("language", "messages"), MINIMAL)
def test_minimal_report_takes_at_most_three_messages(language, messages):
    chat = Chat()
    for text in messages:
        chat.send(text)
    effect = submitted(chat)
    assert chat.messages <= 3
    assert effect.draft.story == messages[0]
    assert effect.draft.kinds, "a kind is always known after the minimal path"
    assert chat.state.language == language
    assert chat.state.step == "idle" and chat.state.draft is None


def test_story_suggests_kind_place_and_time_and_is_not_asked_again():
    chat = Chat()
    chat.send("ik werd net uitgescholden aan de balie")
    draft = chat.draft
    assert draft.kinds == ["verbal"] and draft.kinds_suggested
    assert draft.place == "counter"
    assert draft.occurred_just_now
    assert chat.state.step == "summary"
    assert "Wat is er gebeurd" not in chat.said


def test_story_with_yesterday_time_sets_when():
    chat = Chat()
    chat.send("Gisteren om 14:30 werd ik bedreigd aan de telefoon")
    assert dt.datetime.fromisoformat(chat.draft.occurred_at) == dt.datetime(2026, 11, 22, 14, 30, tzinfo=AMS)
    assert not chat.draft.occurred_just_now
    assert chat.draft.kinds == ["threat"] and chat.draft.place == "phone"


def test_greeting_gets_introduction_and_story_question():
    chat = Chat()
    chat.send("hallo")
    assert "Meldbot" in chat.said and "Gemeente Testdam" in chat.said
    assert "Wat is er gebeurd?" in chat.said
    assert chat.state.step == "story"
    chat.send("Een klant sloeg me in het gemeentehuis bij de balie")
    assert chat.draft.kinds == ["physical"]
    assert chat.draft.story.startswith("Een klant sloeg")


def test_report_command_then_story():
    chat = Chat()
    chat.send("!melden")
    assert chat.state.step == "story"
    chat.send("/report")
    assert "al bezig" in chat.said


def test_details_question_lists_only_what_is_missing():
    chat = Chat()
    chat.send("Er stond iemand de hele tijd naar me te kijken")  # no kind and no place we know
    said = chat.said
    assert chat.state.step == "details"
    assert "11. Balie of loket" in said and "1. Verbale agressie" in said

    chat = Chat()
    chat.send("Ik werd uitgescholden")  # kind known, place not
    assert chat.state.step == "details"
    assert "Ik noteer het als: Verbale agressie" in chat.said
    assert "1. Balie of loket" in chat.said and "Bedreiging" not in chat.said
    chat.send("1 2")
    assert "één plek" in chat.said and chat.draft.place is None
    chat.send("8 in de lift")
    assert chat.draft.place == "other" and chat.draft.place_text == "in de lift"


def test_details_accepts_words_for_both_lists():
    chat = Chat()
    chat.send("er gebeurde iets")
    chat.send("bedreiging aan de balie")
    assert chat.draft.kinds == ["threat"] and chat.draft.place == "counter"
    assert chat.state.step == "summary"


def test_details_rejects_two_places_and_numbers_out_of_range():
    chat = Chat()
    chat.send("er gebeurde iets")
    chat.send("11 12")
    assert "één plek" in chat.said and chat.state.step == "details"
    chat.send("99")
    assert "1 tot en met 18" in chat.said and chat.state.step == "details"
    assert chat.draft.kinds is None


def at_old_wishes_step(story: str = "ik werd net uitgescholden aan de balie") -> Chat:
    """A conversation an older version saved at its wishes question (after the story)."""
    chat = Chat()
    chat.send(story)
    data = chat.state.to_dict()
    data.update(step="wishes", history=["story"])
    return Chat(state=State.from_dict(data))


def test_old_wishes_step_numbers_and_none_return_to_the_summary():
    chat = at_old_wishes_step()
    chat.send("1 2 4")
    draft = chat.draft
    assert (draft.contact, draft.aftercare, draft.police_report, draft.police_came) == (True, "yes", True, False)
    assert chat.state.step == "summary" and "Kijk even of dit klopt" in chat.said
    assert "[x] 2. Nazorg" in chat.said and "[x] 4. Aangifte doen" in chat.said
    chat = at_old_wishes_step()
    chat.send("0")
    draft = chat.draft
    assert (draft.contact, draft.aftercare, draft.police_report) == (False, "no", False)
    assert chat.state.step == "summary" and "[x]" not in chat.said
    chat.send("terug")
    assert chat.state.step == "wishes" and "Wat heb je nodig? Meer dan één mag." in chat.said


def test_send_without_ticking_keeps_aftercare_open_not_declined():
    chat = Chat()
    chat.send("ik werd net uitgescholden aan de balie")
    chat.send("verzenden")
    draft = submitted(chat).draft
    assert draft.contact is True  # ticked by default on the summary
    assert draft.aftercare is None  # not ticked is not declined: the 72-hour check-in still applies
    assert draft.police_report is False and draft.anonymous is False
    chat = at_old_wishes_step()
    chat.send("ok")
    assert chat.draft.contact is True and chat.draft.aftercare is None


def test_story_mentioning_police_preselects_it():
    chat = Chat()
    chat.send("Een man duwde me bij het loket, de politie kwam erbij")
    assert chat.draft.police_came is True
    assert chat.state.step == "summary" and "[x] 5. De politie is erbij geweest" in chat.said


def test_summary_change_every_line_and_return_to_summary():
    chat = Chat()
    chat.send("ik werd net uitgescholden aan de balie")
    assert chat.state.step == "summary"
    chat.send("wijzig 1")
    chat.send("Een bezoeker schold me uit en gooide een stoel om")
    assert chat.state.step == "summary" and chat.draft.story.startswith("Een bezoeker")
    chat.send("wijzig 2")
    assert "[x] 1. Verbale agressie" in chat.said
    chat.send("1 7")
    assert chat.draft.kinds == ["verbal", "vandalism"]
    chat.send("wijzig 3")
    chat.send("vanochtend")
    assert dt.datetime.fromisoformat(chat.draft.occurred_at) == dt.datetime(2026, 11, 23, 9, 0, tzinfo=AMS)
    chat.send("wijzig 4")
    chat.send("5")
    assert chat.draft.place == "home_visit"
    chat.send("wijzig 5")
    chat.send("2 lange man, ongeveer 40")
    assert chat.draft.perpetrator == "citizen" and chat.draft.perpetrator_text == "lange man, ongeveer 40"
    chat.send("change 6")
    chat.send("1 3")
    assert chat.draft.consequences == ["injury", "absence"]
    chat.send("wijzig 7")  # the wishes are no summary line any more: they are ticked below it
    assert "1 tot en met 6" in chat.said and chat.state.step == "summary"
    chat.send("2 niet 1")
    assert chat.draft.aftercare == "yes" and chat.draft.contact is False
    assert chat.state.step == "summary"
    chat.send("wijzig 1")
    chat.send("Een bezoeker schold me uit en gooide een stoel om")
    summary = chat.said
    for expected in ("Huisbezoek", "lange man", "Letsel", "Verzuim", "Vernieling"):
        assert expected in summary
    chat.send("verzenden")
    effect = submitted(chat)
    assert effect.draft.place == "home_visit"


def test_back_goes_to_previous_question_and_keeps_answers():
    chat = Chat()
    chat.send("er gebeurde iets")
    chat.send("2 11")
    assert chat.state.step == "summary"
    chat.send("terug")
    assert chat.state.step == "details"
    assert chat.draft.kinds == ["threat"] and chat.draft.place == "counter"
    chat.send("back")
    assert chat.state.step == "story"
    chat.send("terug")
    assert "eerste vraag" in chat.said and chat.state.step == "story"
    chat.send("Iemand bedreigde me bij de balie")
    assert chat.draft.kinds == ["threat"]  # kept, not replaced by a new suggestion


def test_back_from_an_edit_returns_to_summary():
    chat = Chat()
    chat.send("ik werd net uitgescholden aan de balie")
    chat.send("wijzig 4")
    assert chat.state.step == "where"
    chat.send("terug")
    assert chat.state.step == "summary" and chat.draft.place == "counter"


def test_skip_optional_questions_but_not_the_story():
    chat = Chat()
    chat.send("hoi")
    chat.send("overslaan")
    assert "niet overslaan" in chat.said and chat.state.step == "story"
    chat.send("Er gebeurde iets naars")
    assert chat.state.step == "details"
    chat.send("skip")
    assert chat.state.step == "summary" and chat.draft.kinds is None and chat.draft.contact is None
    assert "niet ingevuld" in chat.said
    chat.send("overslaan")
    assert "Typ 'verzenden'" in chat.said and chat.state.step == "summary"
    chat.send("verzenden")
    assert submitted(chat).draft.kinds is None


def test_cancel_asks_to_confirm_and_no_keeps_everything():
    chat = Chat()
    chat.send("ik werd net uitgescholden aan de balie")
    chat.send("stop")
    assert chat.state.step == "confirm_cancel"
    chat.send("nee")
    assert chat.state.step == "summary" and chat.draft.story.startswith("ik werd")
    chat.send("annuleer")
    chat.send("ja")
    assert chat.state.step == "idle" and chat.state.draft is None
    assert "niets verstuurd" in chat.said
    assert not chat.last.effects  # no files, nothing to discard


def test_cancel_with_files_discards_them_and_english_cancel():
    chat = Chat()
    chat.send("language en")
    chat.send("", (photo(),))
    chat.send("cancel")
    assert "Do you want to stop" in chat.said
    chat.send("yes")
    assert any(isinstance(e, DiscardDraft) for e in chat.last.effects)


def test_cancel_when_idle_and_confirm_unclear_answer():
    chat = Chat()
    chat.send("stop")
    assert "niets te stoppen" in chat.said
    chat.send("Ik werd bedreigd op straat")
    chat.send("cancel")
    chat.send("misschien")
    assert chat.state.step == "confirm_cancel" and "ja' of 'nee" in chat.said
    chat.send("terug")
    assert chat.state.step == "summary"  # the story named kind and place


def test_unknown_answers_explain_and_repeat_the_question():
    chat = Chat()
    chat.send("ik werd net uitgescholden aan de balie")
    chat.send("blauw")
    assert "begreep ik niet" in chat.said and "Kijk even of dit klopt" in chat.said
    assert chat.state.step == "summary"
    chat.send("9")
    assert "1 tot en met 6" in chat.said and chat.state.step == "summary"
    chat.send("hmm")
    assert "begreep ik niet" in chat.said and chat.state.step == "summary"
    chat.send("wijzig 3")
    chat.send("morgen om 10 uur")
    assert "toekomst" in chat.said and chat.state.step == "when"
    chat.send("qwerty")
    assert "begreep ik niet" in chat.said and chat.state.step == "when"


def test_long_text_at_a_later_step_is_added_to_the_story():
    chat = Chat()
    chat.send("ik werd net uitgescholden aan de balie")
    chat.send("en daarna liep hij nog achter me aan naar de fietsenstalling")
    assert "aan je verhaal toegevoegd" in chat.said
    assert "fietsenstalling" in chat.draft.story and chat.draft.story.startswith("ik werd net")
    assert chat.state.step == "summary" and "fietsenstalling" in chat.said


def test_help_and_texts_during_the_dialogue_then_the_same_question():
    chat = Chat()
    chat.send("ik werd net uitgescholden aan de balie")
    for command, expected in (("help", "mijn meldingen"), ("!huisregels", "Huisregels"),
                              ("/normkaart", "Stop Agressie Samen"), ("Norm Card", "Stop Agressie Samen")):
        chat.send(command)
        assert expected in chat.said
        assert chat.said.rstrip().endswith("Stoppen: 'annuleer'.")  # the summary again
        assert chat.state.step == "summary"


def test_my_reports_is_an_effect_for_the_engine():
    chat = Chat()
    chat.send("mijn meldingen")
    assert chat.last.effects == (ListMyReports(),)
    chat.send("My Reports")
    assert chat.last.effects == (ListMyReports(),)


def test_language_switch_keeps_the_draft():
    chat = Chat()
    chat.send("ik werd net uitgescholden aan de balie")
    chat.send("taal en")
    assert chat.state.language == "en" and "English" in chat.said
    assert "Please check that this is right" in chat.said and "What do you need?" in chat.said
    chat.send("language nl")
    assert "Kijk even of dit klopt" in chat.said and chat.draft.story.startswith("ik werd")


def test_english_opening_switches_language_once_only():
    chat = Chat()
    chat.send("A visitor shouted at me at the desk")
    assert chat.state.language == "en" and "Please check that this is right" in chat.said
    chat = Chat()
    chat.send("taal nl")
    chat.send("A visitor shouted at me at the desk")
    assert chat.state.language == "nl"


def test_attachments_at_any_step_join_the_draft():
    chat = Chat()
    chat.send("", (photo("bericht.png", 120_000),))
    assert "bericht.png (117 kB)" in chat.said and chat.state.step == "story"
    chat.send("Hij schreef dreigende berichten op facebook", (photo("tweede.png"),))
    assert len(chat.draft.attachments) == 2 and chat.draft.story.startswith("Hij schreef")
    assert chat.draft.kinds == ["threat", "online"] and chat.draft.place == "online"
    chat.send("", (photo("derde.png"),))
    # The story named kind and place, so details are skipped; a file alone keeps the step.
    assert chat.state.step == "summary"
    assert len(chat.draft.attachments) == 3
    chat.send("overslaan")
    assert "Bewijs: 3 bestanden" in chat.said
    chat.send("verzenden")
    assert len(submitted(chat).draft.attachments) == 3


def test_files_after_submission_go_to_that_case():
    chat = Chat()
    for text in ("ik werd net uitgescholden aan de balie", "verzenden"):
        chat.send(text)
    chat.state = record_submission(chat.state, "MB-ABC-DEF", NOW)
    chat.send("", (photo(),))
    assert chat.last.effects == (AddEvidence("MB-ABC-DEF"),)
    assert "MB-ABC-DEF" in chat.said
    later = Chat(now=NOW + dt.timedelta(days=2), state=chat.state)
    later.send("", (photo(),))
    assert not later.last.effects and later.state.step == "story"


# -- bad input --------------------------------------------------------------------------------------


def test_empty_message_when_idle_and_at_a_question():
    chat = Chat()
    chat.send("")
    assert "Wat is er gebeurd?" in chat.said
    chat.send("   ")
    assert "geen tekst" in chat.said and chat.state.step == "story"


def test_only_emoji_is_not_a_story():
    chat = Chat()
    chat.send("😡😡😡")
    assert chat.state.step == "story"
    chat.send("🤬")
    assert "paar woorden" in chat.said and chat.draft.story == ""


def test_huge_message_is_cut_with_a_notice():
    chat = Chat()
    chat.send("Hij schold me uit. " + "bla " * 25_000)
    assert "erg lang" in chat.said
    assert len(chat.draft.story) <= MAX_MESSAGE_CHARS
    assert chat.draft.kinds == ["verbal"]


def test_control_and_direction_characters_are_removed_html_kept_as_text():
    chat = Chat()
    chat.send("Hij\x00 schold\u202e me\u200b uit <script>alert(1)</script>\x1b[31m")
    story = chat.draft.story
    assert "\x00" not in story and "\u202e" not in story and "\u200b" not in story and "\x1b" not in story
    assert "<script>alert(1)</script>" in story  # escaping is the renderer's job
    assert chat.draft.kinds == ["verbal"]


def test_answer_meant_for_another_step_loses_nothing():
    chat = Chat()
    chat.send("ik werd net uitgescholden aan de balie")
    before = chat.draft.to_dict()
    chat.send("gisteren 14:30")  # a time, while the summary is shown
    assert chat.state.step == "summary" and "begreep ik niet" in chat.said
    assert chat.draft.to_dict() == before


def test_unknown_step_from_a_future_version_recovers():
    state = State(step="some_new_step")
    chat = Chat(state=state)
    chat.send("Hij bedreigde me aan de balie")
    # The story names kind (threat) and place (counter), so the details question is skipped.
    assert chat.state.step == "summary"


def test_state_from_older_version_with_unknown_keys_loads():
    data = State().to_dict()
    data["removed_field"] = 1
    assert State.from_dict(data).step == "idle"


def test_send_word_at_a_question_shows_the_summary_first():
    chat = Chat()
    chat.send("er gebeurde iets")
    chat.send("2 11")
    chat.send("terug")
    assert chat.state.step == "details"
    chat.send("verzenden")
    assert chat.state.step == "summary" and not chat.last.effects
    assert "Kijk even of dit klopt" in chat.said
    chat.send("verzenden")
    assert submitted(chat).draft.contact is True


def test_summary_shows_the_wishes_as_a_tick_list():
    chat = Chat()
    chat.send("Een man duwde me bij het loket, de politie kwam erbij")
    (summary,) = [r for r in chat.last.replies if r.options]
    ticked = [(o.number, o.selected) for o in summary.options]
    assert ticked == [(1, True), (2, False), (3, False), (4, False), (5, True), (6, False)]
    assert "6. Gevolgen" in summary.text and "7." not in summary.text
    assert summary.text.endswith("Wat heb je nodig? Vink aan met het nummer:")


def test_one_word_opens_the_conversation_unless_it_names_an_incident():
    chat = Chat()
    chat.send("oppakken")
    assert chat.state.step == "story" and "Wat is er gebeurd?" in chat.said
    chat = Chat()
    chat.send("uitgescholden")
    assert chat.draft.story == "uitgescholden" and chat.draft.kinds == ["verbal"]


def test_relay_to_the_coordinator_ends_after_three_quiet_days():
    from dialogs import RelayToCoordinator, open_relay

    chat = Chat(state=open_relay(State(), "MB-ABC-DEF", NOW))
    chat.send("Dank je, tot morgen")
    assert chat.last.effects == (RelayToCoordinator("MB-ABC-DEF", "Dank je, tot morgen"),)
    later = Chat(now=NOW + dt.timedelta(days=4), state=chat.state)
    later.send("Ik werd weer uitgescholden aan de balie")
    assert not later.last.effects and later.state.relay_reference is None
    assert later.draft.kinds == ["verbal"]  # a new report, not a relay


def test_replies_carry_what_a_platform_needs_as_data_not_text():
    """A platform with forms learns from the reply itself that a report starts (to offer the form)
    and which case a confirmation is about (to show it on a card): nothing is parsed from text."""
    import datetime as dt

    from dialogs import Context, UserInput, step

    now = dt.datetime(2026, 11, 23, 9, 15, tzinfo=dt.timezone.utc)
    turn = step(None, UserInput(text="melden", now=now), Context())
    assert turn.replies[-1].offer_form and not any(r.offer_form for r in turn.replies[:-1])
    later = step(turn.state, UserInput(text="hallo daar", now=now), Context())
    assert not any(r.offer_form for r in later.replies)
    from dialogs import Draft, submitted

    (confirmation,) = submitted("nl", "MB-7KQ-4XP", Draft(draft_id="d1"), Context())
    assert confirmation.reference == "MB-7KQ-4XP"
