"""Random conversations: the dialogue never raises, never loses an answer, always ends valid."""

from __future__ import annotations

import datetime as dt
import json

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from dialogs import AttachmentInfo, State, SubmitReport, UserInput, step
from dialogs.categories import CONSEQUENCES, KINDS, PERPETRATORS, PLACES
from dialogs.flow import QUESTION_STEPS
from helpers import CONTEXT, NOW

WORDS = [
    "ok", "ja", "nee", "yes", "no", "0", "1", "2", "3", "7", "11", "18", "99", "1 3", "2 11", "8 in de lift",
    "verzenden", "send", "wijzig 1", "wijzig 3", "change 5", "6", "stop", "annuleer", "cancel", "terug", "back",
    "overslaan", "skip", "help", "huisregels", "normkaart", "mijn meldingen", "taal en", "taal nl", "melden",
    "gisteren 14:30", "vanochtend", "morgen", "net", "balie", "bedreiging", "hoi", "", "   ", "😡", "<b>x</b>",
    "Ik werd uitgescholden aan de balie", "He threatened me on the phone yesterday",
    "en toen liep hij nog achter me aan tot aan de parkeerplaats bij het stadhuis",
]
TEXTS = st.one_of(st.sampled_from(WORDS), st.text(max_size=60), st.text(min_size=5000, max_size=6000))
FILES = st.lists(st.builds(AttachmentInfo, st.sampled_from(["a.png", "b.pdf"]), st.just("image/png"),
                           st.integers(1, 10**7)), max_size=2)
VALID_STEPS = set(QUESTION_STEPS) | {"idle", "summary", "confirm_cancel"}


class Conversation(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.state = State()
        self.now = NOW
        self.submitted = 0

    @rule(text=TEXTS, files=FILES, minutes=st.integers(0, 600))
    def message(self, text, files, minutes):
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

    def _check_nothing_lost(self, before, turn):
        after = turn.state
        if before.draft is None or after.draft is None or before.draft.draft_id != after.draft.draft_id:
            return
        old, new = before.draft, after.draft
        # Answers are only replaced by other answers, never dropped, within one draft.
        if old.story and before.step not in ("story",):
            assert new.story.startswith(old.story) or before.editing or before.step == "summary"
        for name in ("kinds", "place", "perpetrator", "consequences", "contact", "aftercare"):
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
