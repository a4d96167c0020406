"""Random conversations: the dialogue never raises, never loses an answer, always ends valid."""

from __future__ import annotations

import datetime as dt
import json

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from dialogs import AttachmentInfo, State, SubmitReport, UserInput, step
from dialogs.categories import CONSEQUENCES, KINDS, PERPETRATORS, PLACES, WISHES
from dialogs.flow import QUESTION_STEPS
from helpers import CONTEXT, NOW

WORDS = [
    "ok", "ja", "nee", "yes", "no", "0", "1", "2", "3", "7", "11", "18", "99", "1 3", "2 11", "8 in de lift",
    "verzenden", "send", "wijzig 1", "wijzig 3", "change 5", "6", "stop", "annuleer", "cancel", "terug", "back",
    "overslaan", "skip", "help", "huisregels", "normkaart", "mijn meldingen", "taal en", "taal nl", "melden",
    "gisteren 14:30", "vanochtend", "morgen", "net", "balie", "bedreiging", "hoi", "", "   ", "😡", "<b>x</b>",
    "Ik werd uitgescholden aan de balie", "He threatened me on the phone yesterday",
    "en toen liep hij nog achter me aan tot aan de parkeerplaats bij het stadhuis",
    "2 verzenden", "niet 2", "2 uit", "geen nazorg", "no aftercare", "nazorg", "4 send", "anoniem", "niet verzenden",
    "politie was er", "wijzig 2", "change 7", "2 niet 1", "2 9",
]
TEXTS = st.one_of(st.sampled_from(WORDS), st.text(max_size=60), st.text(min_size=5000, max_size=6000))
FILES = st.lists(st.builds(AttachmentInfo, st.sampled_from(["a.png", "b.pdf"]), st.just("image/png"),
                           st.integers(1, 10**7)), max_size=2)
VALID_STEPS = set(QUESTION_STEPS) | {"idle", "summary", "confirm_cancel"}
#: A word that ticks each wish on the summary (`niet`/`geen` before it unticks).
WISH_WORD = {"contact": ["contact"], "aftercare_yes": ["nazorg", "aftercare"], "aftercare_later": ["misschien later"],
             "police_report": ["aangifte", "police report"], "police_came": ["politie was er", "police came"],
             "anonymous": ["anoniem", "anonymous"]}
OTHER_AFTERCARE = {"aftercare_yes": "aftercare_later", "aftercare_later": "aftercare_yes"}


def ticks(draft) -> set[str]:
    """The wishes the summary shows ticked for a draft."""
    shown = {"contact"} if draft.contact is not False else set()
    shown |= {code for code, value in (("aftercare_yes", "yes"), ("aftercare_later", "later"))
              if draft.aftercare == value}
    return shown | {code for code, on in (("police_report", draft.police_report), ("police_came", draft.police_came),
                                          ("anonymous", draft.anonymous)) if on}


def at_summary(machine) -> bool:
    return machine.state.step == "summary" and machine.state.draft is not None


class Conversation(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.state = State()
        self.now = NOW
        self.submitted = 0

    @rule(text=TEXTS, files=FILES, minutes=st.integers(0, 600))
    def message(self, text, files, minutes):
        self.send(text, files, minutes)

    @precondition(lambda self: self.state.step in ("idle", "story"))
    @rule(story=st.sampled_from(["Ik werd uitgescholden aan de balie", "He threatened me on the phone yesterday"]))
    def story_naming_kind_and_place(self, story):
        turn = self.send(story)
        assert turn.state.step == "summary", "a story that names kind and place goes straight to the summary"

    @precondition(at_summary)
    @rule(code=st.sampled_from(WISHES), by_word=st.booleans(), word=st.integers(0, 1),
          send=st.sampled_from(["", " verzenden", " send", " en verzenden"]))
    def tick(self, code, by_word, word, send):
        before = ticks(self.state.draft)
        name = WISH_WORD[code][word % len(WISH_WORD[code])] if by_word else str(WISHES.index(code) + 1)
        turn = self.send(name + send)
        expected = (before - {OTHER_AFTERCARE.get(code)}) | {code}
        if send:
            (effect,) = [e for e in turn.effects if isinstance(e, SubmitReport)]
            assert ticks(effect.draft) == expected and turn.state.step == "idle"
        else:
            assert not turn.effects and turn.state.step == "summary"
            assert ticks(turn.state.draft) == expected

    @precondition(at_summary)
    @rule(code=st.sampled_from(WISHES), form=st.sampled_from(["niet {n}", "{n} uit", "not {n}", "untick {n}",
                                                              "geen {w}", "no {w}"]))
    def untick(self, code, form):
        aftercare = self.state.draft.aftercare
        before = ticks(self.state.draft)
        turn = self.send(form.format(n=WISHES.index(code) + 1, w=WISH_WORD[code][0]))
        assert not turn.effects and turn.state.step == "summary"
        after = turn.state.draft
        declines_aftercare = code in OTHER_AFTERCARE and "{w}" in form  # "geen nazorg": no aftercare at all
        assert ticks(after) == before - ({code, OTHER_AFTERCARE[code]} if declines_aftercare else {code})
        if code in OTHER_AFTERCARE:
            if declines_aftercare:
                assert after.aftercare == "no", "aftercare declined in words is an explicit no"
            elif code in before:
                assert after.aftercare is None, "an unticked number leaves aftercare not asked"
            else:
                assert after.aftercare == aftercare

    def send(self, text, files=(), minutes=0):
        self.now += dt.timedelta(minutes=minutes)
        before = self.state
        turn = step(self.state, UserInput(text, self.now, tuple(files)), CONTEXT)
        # Every message gets an answer; "my reports" gets its answer from the engine.
        assert turn.replies or turn.effects, "every message gets an answer"
        for effect in turn.effects:
            if isinstance(effect, SubmitReport):
                self.submitted += 1
                assert before.step == "summary" and before.draft is not None
                assert effect.draft.story == before.draft.story and effect.draft.story
        self._check_nothing_lost(before, turn)
        self.state = State.from_dict(json.loads(json.dumps(turn.state.to_dict())))
        return turn

    def _check_nothing_lost(self, before, turn):
        after = turn.state
        if before.draft is None or after.draft is None or before.draft.draft_id != after.draft.draft_id:
            return
        old, new = before.draft, after.draft
        # Answers are only replaced by other answers, never dropped, within one draft.
        if old.story and before.step not in ("story",):
            assert new.story.startswith(old.story) or before.editing or before.step == "summary"
        for name in ("kinds", "place", "perpetrator", "consequences", "contact", "aftercare"):
            if name == "aftercare" and before.step == "summary":
                continue  # unticking aftercare on the summary makes it "not asked" again
            if getattr(old, name) is not None and before.step != "wishes":
                assert getattr(new, name) is not None, name
        assert len(new.attachments) >= len(old.attachments)

    @invariant()
    def valid_state(self):
        s = self.state
        assert s.step in VALID_STEPS
        assert s.language in ("nl", "en")
        if s.step == "idle":
            return
        assert s.draft is not None
        d = s.draft
        assert d.kinds is None or set(d.kinds) <= set(KINDS)
        assert d.place is None or d.place in PLACES
        assert d.perpetrator is None or d.perpetrator in PERPETRATORS
        assert d.consequences is None or set(d.consequences) <= set(CONSEQUENCES)
        assert d.aftercare in (None, "yes", "later", "no")
        assert len(d.story) <= 8000
        if s.step in ("details", "wishes", "summary"):
            assert d.story, "past the story question there is always a story"
        if s.step == "confirm_cancel":
            assert s.before_cancel in VALID_STEPS


TestConversation = Conversation.TestCase
TestConversation.settings = settings(max_examples=100, stateful_step_count=30, deadline=None,
                                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
