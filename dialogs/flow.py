"""The report conversation as a pure state machine: `step(state, user_input, context) -> Turn`.

Main path (a minimal report is 3 or 4 messages):
    story -> [details: kind and/or place, only what the story did not tell] -> wishes -> summary -> send
Optional fields (when, perpetrator, consequences) are filled from the story where it names them,
and are offered as numbered lines on the summary ("wijzig 5" / "change 5").
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from babel.dates import format_datetime

from . import categories as cat
from . import text as tx
from .i18n import LANGUAGES, Translator
from .model import (
    AddEvidence,
    AttachmentInfo,
    Context,
    DiscardDraft,
    Draft,
    Effect,
    ListMyReports,
    Option,
    RelayToCoordinator,
    Reply,
    State,
    SubmitReport,
    Turn,
    UserInput,
)
from .when import FutureTime, find_when_in_story, parse_when

QUESTION_STEPS = ("story", "details", "kinds", "when", "where", "perpetrator", "consequences", "wishes")
#: Summary line number -> the step that changes it.
SUMMARY_LINES = {1: "story", 2: "kinds", 3: "when", 4: "where", 5: "perpetrator", 6: "consequences", 7: "wishes"}
#: Attachments sent this long after a submission (with no report in progress) join that case.
EVIDENCE_WINDOW = dt.timedelta(hours=24)

_WISH_WORDS = {
    "contact": ("contact", "bellen", "call me", "gesprek", "talk"),
    "aftercare_yes": ("nazorg", "aftercare", "opvang", "support"),
    "police_report": ("aangifte", "police report", "report to the police"),
    "police_came": ("politie kwam", "police came", "politie was er", "police were there"),
    "anonymous": ("anoniem", "anonymous", "anonymously"),
}
#: Commands that work at any moment, even while a cancel waits for confirmation.
_ANYTIME = ("language", "help", "house_rules", "norm", "my_reports")


class _Answer(Exception):
    """Raised by an answer handler when the answer does not fit: carries the explanation key."""

    def __init__(self, key: str, **values: object):
        super().__init__(key)
        self.key = key
        self.values = values


class _Dialogue:
    """One turn's working set. Built per call; holds no state between calls."""

    def __init__(self, state: State, user_input: UserInput, context: Context):
        self.state = replace(state, history=list(state.history))
        if self.state.draft:
            self.state.draft = Draft.from_dict(self.state.draft.to_dict())
        self.input = user_input
        self.ctx = context
        self.now = user_input.now.astimezone(context.timezone) if context.timezone else user_input.now
        self.replies: list[Reply] = []
        self.effects: list[Effect] = []
        self.t = Translator(self.state.language)

    # -- output helpers -------------------------------------------------------------------------

    def say(self, key: str, **values: object) -> None:
        self.replies.append(Reply(self.t(key, **values)))

    def set_language(self, language: str) -> None:
        self.state.language = language
        self.t = Translator(language)

    def turn(self) -> Turn:
        return Turn(tuple(self.replies), self.state, tuple(self.effects))

    # -- entry ------------------------------------------------------------------------------------

    def run(self) -> Turn:
        cleaned = tx.clean(self.input.text)
        text = cleaned.text
        if not self.state.language_chosen and not self.state.introduced and self.state.step == "idle":
            guessed = tx.guess_language(text)
            if guessed and guessed != self.state.language:
                self.set_language(guessed)
        if cleaned.truncated:
            self.say("notice.truncated", kept=tx.MAX_MESSAGE_CHARS, length=cleaned.original_length)

        command = tx.parse_command(text) if text and not self.input.attachments else None
        if command and self.state.step == "confirm_cancel" and command.name not in _ANYTIME:
            command = None  # "stop", "terug", "overslaan" answer the confirmation itself
        if command:
            self.command(command)
            return self.turn()

        if self.input.form is not None:
            self.submit_form(self.input.form)
            return self.turn()

        if self.input.attachments:
            if self.attachments(self.input.attachments, has_text=bool(text)):
                return self.turn()

        if (self.in_dialogue() and self.state.step not in ("story", "summary", "confirm_cancel")
                and text and tx.fold(text) in tx.SEND_WORDS):
            # "verzenden" at a question: show the summary to confirm, keeping every answer.
            self.ask("summary")
            return self.turn()

        handler = getattr(self, f"answer_{self.state.step}", None)
        if handler is None:  # unknown step from a newer version: start over safely
            self.state.step = "idle"
            handler = self.answer_idle
        handler(text)
        return self.turn()

    # -- commands ---------------------------------------------------------------------------------

    def in_dialogue(self) -> bool:
        return self.state.step != "idle" and self.state.draft is not None

    def command(self, command: tx.Command) -> None:
        name = command.name
        if name == "language":
            self.state.language_chosen = True
            self.set_language(command.arg if command.arg in LANGUAGES else self.state.language)
            self.say("language.set")
            self.repeat_question()
        elif name == "help":
            self.replies.append(self.help_reply())
            self.repeat_question()
        elif name == "house_rules":
            self.replies.append(Reply(self.ctx_text(self.ctx.house_rules, "house_rules.missing")))
            self.repeat_question()
        elif name == "norm":
            self.replies.append(Reply(self.ctx_text(self.ctx.norm_card, "norm.missing")))
            self.repeat_question()
        elif name == "my_reports":
            self.effects.append(ListMyReports())
            self.repeat_question(after_effect=True)
        elif name == "report":
            if self.in_dialogue():
                self.say("report.already_busy")
                self.repeat_question()
            else:
                if not self.state.introduced:
                    self.state.introduced = True
                    self.say("intro", organisation=self.ctx.organisation)
                self.start_draft()
                self.ask("story", push=False)
        elif name == "cancel":
            if self.in_dialogue():
                self.state.before_cancel = self.state.step
                self.state.step = "confirm_cancel"
                self.replies.append(self.question_confirm_cancel())
            else:
                self.say("cancel.nothing")
        elif name == "back":
            self.go_back()
        elif name == "skip":
            self.skip()

    def ctx_text(self, texts: dict[str, str], missing_key: str) -> str:
        return texts.get(self.state.language) or texts.get(self.ctx.default_language) or self.t(missing_key)

    def help_reply(self) -> Reply:
        body = self.t("help.body")
        if self.in_dialogue():
            body = self.t("help.in_dialogue") + "\n\n" + body
        return Reply(body, title=self.t("help.title"))

    def repeat_question(self, after_effect: bool = False) -> None:
        if self.in_dialogue():
            self.ask(self.state.step, repeat=True)
        elif not after_effect and not self.replies:
            self.say("idle.prompt")

    def go_back(self) -> None:
        if not self.in_dialogue():
            self.say("back.nothing")
            return
        if self.state.editing and self.state.step != "summary":
            self.ask("summary", push=False)
            return
        if not self.state.history:
            self.say("back.first")
            self.ask(self.state.step, repeat=True)
            return
        previous = self.state.history.pop()
        self.state.editing = False
        self.ask(previous, push=False)

    def skip(self) -> None:
        step = self.state.step
        if not self.in_dialogue():
            self.say("skip.nothing")
        elif step == "story":
            self.say("skip.story")
            self.ask("story", repeat=True)
        elif step == "summary":
            self.say("skip.summary")
            self.ask("summary", repeat=True)
        else:
            self.say("skip.done")
            self.advance()

    # -- a report form (one card with every field) ----------------------------------------------------

    def submit_form(self, values: dict) -> None:
        form_id = str(values.get("form_id") or "")[:64]
        if form_id and form_id in self.state.submitted_forms:
            self.say("form.already_sent", reference=self.state.submitted_forms[form_id])
            return
        story = tx.clean(str(values.get("story") or ""), tx.MAX_STORY_CHARS).text
        if not tx.has_words(story):
            self.say("form.story_missing")
            return
        draft = Draft(draft_id=f"form-{form_id or self.input.now.timestamp()}", story=story,
                      occurred_at=self.now.isoformat())
        chosen = _codes(values.get("kinds"), cat.KINDS)
        draft.kinds = chosen or cat.suggest_kinds(story) or None
        place = _codes(values.get("place"), cat.PLACES)
        draft.place = place[0] if place else cat.suggest_place(story)
        when_text = tx.clean(str(values.get("when") or ""), tx.MAX_SHORT_CHARS).text
        if when_text:
            try:
                found = parse_when(when_text, self.now, self.ctx.timezone)
            except FutureTime:
                self.say("error.when_future")
                return
            if found is None:
                self.say("form.when_unknown", text=when_text)
                return
            draft.occurred_at, draft.occurred_just_now, draft.occurred_text = (
                found.at.isoformat(), found.just_now, when_text)
        wishes = set(_codes(values.get("wishes"), cat.WISHES))
        draft.contact = "contact" in wishes
        draft.aftercare = "yes" if "aftercare_yes" in wishes else "later" if "aftercare_later" in wishes else None
        draft.police_report = "police_report" in wishes
        draft.police_came = "police_came" in wishes or cat.suggest_police_came(story)
        draft.anonymous = "anonymous" in wishes
        if cat.suggest_injury(story):
            draft.consequences = ["injury"]
        self.effects.append(SubmitReport(draft, form_id or None))

    # -- attachments ------------------------------------------------------------------------------

    def attachments(self, files: tuple[AttachmentInfo, ...], has_text: bool) -> bool:
        """Take in files; returns True when the turn is complete (no text left to handle)."""
        names = ", ".join(f"{f.name} ({_size(f.size)})" for f in files)
        recent = self.recent_submission()
        if not self.in_dialogue() and recent and not has_text:
            self.effects.append(AddEvidence(recent))
            self.say("evidence.added_to_case", files=names, reference=recent)
            return True
        if not self.in_dialogue():
            self.start_draft()
            self.state.step = "story"
        assert self.state.draft is not None
        self.state.draft.attachments.extend(
            {"name": f.name, "media_type": f.media_type, "size": f.size} for f in files
        )
        self.say("evidence.received", files=names)
        if has_text:
            return False
        self.ask(self.state.step, repeat=True)
        return True

    def recent_submission(self) -> str | None:
        return _recent_reference(self.state, self.input.now)

    # -- moving between steps ----------------------------------------------------------------------

    def start_draft(self) -> None:
        draft_id = self.input.now.astimezone(dt.timezone.utc).strftime("%Y%m%d%H%M%S%f")
        self.state.draft = Draft(draft_id=draft_id, occurred_at=self.now.isoformat())
        self.state.history = []
        self.state.editing = False
        self.state.step = "story"

    def next_step(self) -> str:
        draft = self.state.draft
        assert draft is not None
        step = self.state.step
        if self.state.editing:
            return "summary"
        if step == "story":
            return "details" if draft.kinds is None or draft.place is None else "wishes"
        if step == "details":
            return "wishes"
        return "summary"

    def advance(self) -> None:
        self.ask(self.next_step())

    def ask(self, step: str, repeat: bool = False, push: bool = True) -> None:
        """Move to `step` (recording history) and send its question."""
        current = self.state.step
        if (push and not repeat and not self.state.editing and current != step
                and current in QUESTION_STEPS + ("summary",)):
            self.state.history.append(current)
        if step == "summary":
            self.state.editing = False
        self.state.step = step
        self.replies.append(getattr(self, f"question_{step}")())

    # -- questions ------------------------------------------------------------------------------

    def options(self, prefix: str, codes: tuple[str, ...], selected=(), start: int = 1) -> tuple[Option, ...]:
        return tuple(
            Option(start + i, self.t(f"{prefix}.{code}"), code in selected) for i, code in enumerate(codes)
        )

    def question_confirm_cancel(self) -> Reply:
        return Reply(self.t("cancel.confirm"), hint=self.t("hint.yes_no"))

    def question_story(self) -> Reply:
        return Reply(self.t("q.story"), hint=self.t("hint.story"))

    def question_details(self) -> Reply:
        draft = self.state.draft
        assert draft is not None
        want_kinds = draft.kinds is None or not draft.kinds_suggested
        want_place = draft.place is None or not want_kinds
        if want_kinds and want_place:
            options = self.options("kind", cat.KINDS, draft.kinds or ()) + self.options(
                "place", cat.PLACES, (draft.place,), start=len(cat.KINDS) + 1
            )
            return Reply(self.t("q.details_both"), options, self.t("hint.details_both"))
        if want_kinds:
            return Reply(self.t("q.kinds"), self.options("kind", cat.KINDS, draft.kinds or ()),
                         self.t("hint.kinds"))
        return Reply(self.t("q.where_after_kinds", kinds=self.kind_labels(draft.kinds)),
                     self.options("place", cat.PLACES, (draft.place,)), self.t("hint.where"))

    def question_kinds(self) -> Reply:
        draft = self.state.draft
        assert draft is not None
        hint = self.t("hint.kinds_confirm") if draft.kinds else self.t("hint.kinds")
        return Reply(self.t("q.kinds"), self.options("kind", cat.KINDS, draft.kinds or ()), hint)

    def question_when(self) -> Reply:
        return Reply(self.t("q.when", current=self.when_label()), hint=self.t("hint.when"))

    def question_where(self) -> Reply:
        draft = self.state.draft
        assert draft is not None
        return Reply(self.t("q.where"), self.options("place", cat.PLACES, (draft.place,)), self.t("hint.where"))

    def question_perpetrator(self) -> Reply:
        draft = self.state.draft
        assert draft is not None
        return Reply(self.t("q.perpetrator"), self.options("perpetrator", cat.PERPETRATORS, (draft.perpetrator,)),
                     self.t("hint.perpetrator"))

    def question_consequences(self) -> Reply:
        draft = self.state.draft
        assert draft is not None
        return Reply(self.t("q.consequences"),
                     self.options("consequence", cat.CONSEQUENCES, draft.consequences or ()),
                     self.t("hint.consequences"))

    def wish_selection(self) -> set[str]:
        draft = self.state.draft
        assert draft is not None
        selected = set()
        if draft.contact is not False:
            selected.add("contact")
        if draft.aftercare == "yes":
            selected.add("aftercare_yes")
        if draft.aftercare == "later":
            selected.add("aftercare_later")
        if draft.police_report:
            selected.add("police_report")
        if draft.police_came:
            selected.add("police_came")
        if draft.anonymous:
            selected.add("anonymous")
        return selected

    def question_wishes(self) -> Reply:
        return Reply(self.t("q.wishes"), self.options("wish", cat.WISHES, self.wish_selection()),
                     self.t("hint.wishes"))

    def question_summary(self) -> Reply:
        draft = self.state.draft
        assert draft is not None
        t = self.t
        story = draft.story if len(draft.story) <= 280 else draft.story[:277].rstrip() + "…"
        lines = [
            (1, t("summary.story"), f"“{story}”"),
            (2, t("summary.kinds"), self.kind_labels(draft.kinds) if draft.kinds else t("summary.not_given")),
            (3, t("summary.when"), self.when_label(assumed_mark=True)),
            (4, t("summary.where"), self.place_label() or t("summary.not_given")),
            (5, t("summary.perpetrator"), self.perpetrator_label() or t("summary.optional")),
            (6, t("summary.consequences"), self.consequence_label() or t("summary.optional")),
            (7, t("summary.wishes"), self.wish_label()),
        ]
        body = [t("summary.intro")]
        body.append("\n".join(f"{n}. {label}: {value}" for n, label, value in lines))
        if draft.attachments:
            body.append(t.plural("summary.evidence", "summary.evidence_plural", len(draft.attachments)))
        return Reply("\n\n".join(body), hint=t("hint.summary"), title=t("summary.title"))

    # -- labels -----------------------------------------------------------------------------------

    def kind_labels(self, kinds) -> str:
        return ", ".join(self.t(f"kind.{k}") for k in kinds or ())

    def when_label(self, assumed_mark: bool = False) -> str:
        draft = self.state.draft
        assert draft is not None
        at = dt.datetime.fromisoformat(draft.occurred_at) if draft.occurred_at else self.now
        stamp = format_datetime(at, "EEEE d MMMM, HH:mm", locale=self.state.language)
        if draft.occurred_just_now:
            label = self.t("when.just_now", time=stamp)
            if assumed_mark and not draft.occurred_text:
                label += " " + self.t("when.assumed")
            return label
        return stamp

    def place_label(self) -> str:
        draft = self.state.draft
        assert draft is not None
        if draft.place is None:
            return ""
        label = self.t(f"place.{draft.place}")
        return f"{label} ({draft.place_text})" if draft.place_text else label

    def perpetrator_label(self) -> str:
        draft = self.state.draft
        assert draft is not None
        parts = [self.t(f"perpetrator.{draft.perpetrator}")] if draft.perpetrator else []
        if draft.perpetrator_text:
            parts.append(f"“{draft.perpetrator_text}”")
        return " ".join(parts)

    def consequence_label(self) -> str:
        draft = self.state.draft
        assert draft is not None
        if draft.consequences is None:
            return ""
        if not draft.consequences:
            return self.t("consequence.none")
        return ", ".join(self.t(f"consequence.{c}") for c in draft.consequences)

    def wish_label(self) -> str:
        draft = self.state.draft
        assert draft is not None
        t = self.t
        parts = [t("wish.contact_yes") if draft.contact is not False else t("wish.contact_no")]
        parts.append({"yes": t("wish.aftercare_now"), "later": t("wish.aftercare_maybe"),
                      "no": t("wish.aftercare_no")}.get(draft.aftercare or "", t("wish.aftercare_unknown")))
        if draft.police_came:
            parts.append(t("wish.police_was_there"))
        if draft.police_report:
            parts.append(t("wish.police_report_wanted"))
        elif draft.police_report is False and not draft.police_came:
            parts.append(t("wish.police_no"))
        if draft.anonymous:
            parts.append(t("wish.anonymous_chosen"))
        return "; ".join(parts)

    # -- answers ------------------------------------------------------------------------------------

    def answer_idle(self, text: str) -> None:
        if self.state.relay_reference and self.state.relay_until and \
                self.input.now > dt.datetime.fromisoformat(self.state.relay_until):
            self.state.relay_reference = self.state.relay_until = None  # the conversation went quiet
        if self.state.relay_reference and text and tx.has_words(text) and not tx.is_greeting(text):
            self.effects.append(RelayToCoordinator(self.state.relay_reference,
                                                   tx.clean(text, tx.MAX_MESSAGE_CHARS).text))
            self.say("relay.sent", reference=self.state.relay_reference)
            return
        if not text or tx.is_greeting(text) or not tx.has_words(text) or _too_short_for_a_story(text):
            self.introduce(greeting=bool(text) and tx.is_greeting(text))
            return
        self.start_draft()
        self.answer_story(text)

    def introduce(self, greeting: bool) -> None:
        self.state.introduced = True
        if greeting or not self.replies:
            self.say("intro", organisation=self.ctx.organisation)
        self.start_draft()
        self.ask("story", push=False)

    def answer_story(self, text: str) -> None:
        draft = self.state.draft
        assert draft is not None
        if not text:
            self.say("error.empty")
            self.ask("story", repeat=True)
            return
        if not tx.has_words(text):
            self.say("error.story_no_words")
            self.ask("story", repeat=True)
            return
        story = tx.clean(text, tx.MAX_STORY_CHARS)
        draft.story = story.text
        if not self.state.editing:
            self.infer_from_story(draft)
            self.say("story.thanks")
        self.advance()

    def infer_from_story(self, draft: Draft) -> None:
        story = draft.story
        if draft.kinds is None:
            suggested = cat.suggest_kinds(story)
            if suggested:
                draft.kinds, draft.kinds_suggested = suggested, True
        if draft.place is None:
            draft.place = cat.suggest_place(story)
        if not draft.occurred_text:
            found = find_when_in_story(story, self.now, self.ctx.timezone)
            if found:
                draft.occurred_at = found.at.isoformat()
                draft.occurred_just_now = found.just_now
                draft.occurred_text = "story"
        if draft.police_came is None and cat.suggest_police_came(story):
            draft.police_came = True
        if draft.consequences is None and cat.suggest_injury(story):
            draft.consequences = ["injury"]

    def fail(self, error: _Answer, text: str) -> None:
        draft = self.state.draft
        assert draft is not None
        # A long message at the wrong step is most likely more of the story: keep it there.
        if self.state.step != "story" and len(text.split()) >= 6 and tx.has_words(text):
            addition = tx.clean(text, tx.MAX_STORY_CHARS - len(draft.story) - 2).text
            if addition:
                draft.story = f"{draft.story}\n\n{addition}".strip()
                self.say("story.appended")
                self.ask(self.state.step, repeat=True)
                return
        self.say(error.key, **error.values)
        self.ask(self.state.step, repeat=True)

    def handle(self, text: str, parse) -> None:
        """Run an answer parser; on success move on, otherwise explain and ask again."""
        if not text:
            self.say("error.empty")
            self.ask(self.state.step, repeat=True)
            return
        try:
            parse(text)
        except _Answer as error:
            self.fail(error, text)
            return
        self.advance()

    def match_labels(self, text: str, prefix: str, codes: tuple[str, ...]) -> list[str]:
        folded = tx.fold(text)
        found = []
        for code in codes:
            for language in LANGUAGES:
                label = tx.fold(Translator(language)(f"{prefix}.{code}"))
                if label and (label == folded or f" {label} " in f" {folded} "):
                    found.append(code)
                    break
        return found

    def answer_details(self, text: str) -> None:
        draft = self.state.draft
        assert draft is not None
        want_kinds = draft.kinds is None or not draft.kinds_suggested
        want_place = draft.place is None or not want_kinds

        def parse(answer: str) -> None:
            if want_kinds and not want_place:
                return self.parse_kinds(answer)
            if want_place and not want_kinds:
                return self.parse_where(answer)
            numbers, rest = _leading_numbers(answer)
            kinds: list[str] = []
            place = None
            if numbers:
                for number in numbers:
                    if 1 <= number <= len(cat.KINDS):
                        kinds.append(cat.KINDS[number - 1])
                    elif len(cat.KINDS) < number <= len(cat.KINDS) + len(cat.PLACES):
                        if place is not None:
                            raise _Answer("error.one_place")
                        place = cat.PLACES[number - len(cat.KINDS) - 1]
                    else:
                        raise _Answer("error.number_range", low=1, high=len(cat.KINDS) + len(cat.PLACES))
            else:
                kinds = self.match_labels(answer, "kind", cat.KINDS) or cat.suggest_kinds(answer)
                place = cat.suggest_place(answer) or _first(self.match_labels(answer, "place", cat.PLACES))
                if not kinds and not place:
                    if tx.is_yes(answer) and draft.kinds:
                        kinds = list(draft.kinds)
                    else:
                        raise _Answer("error.details")
            if kinds:
                draft.kinds = [k for k in cat.KINDS if k in kinds]
                draft.kinds_suggested = False
            if place:
                draft.place = place
                if place == "other" and rest:
                    draft.place_text = tx.clean(rest, tx.MAX_SHORT_CHARS).text

        self.handle(text, parse)

    def parse_kinds(self, answer: str) -> None:
        draft = self.state.draft
        assert draft is not None
        numbers = tx.parse_numbers(answer)
        if numbers is not None:
            if any(not 1 <= n <= len(cat.KINDS) for n in numbers):
                raise _Answer("error.number_range", low=1, high=len(cat.KINDS))
            draft.kinds = [cat.KINDS[n - 1] for n in sorted(numbers)]
        elif tx.is_yes(answer):
            if not draft.kinds:
                raise _Answer("error.kinds_none_selected")
        else:
            # An exact label ("seksuele intimidatie") wins over keywords inside it ("intimidatie").
            kinds = self.match_labels(answer, "kind", cat.KINDS) or cat.suggest_kinds(answer)
            if not kinds:
                raise _Answer("error.kinds")
            draft.kinds = [k for k in cat.KINDS if k in kinds]
        draft.kinds_suggested = False

    def answer_kinds(self, text: str) -> None:
        self.handle(text, self.parse_kinds)

    def answer_when(self, text: str) -> None:
        draft = self.state.draft
        assert draft is not None

        def parse(answer: str) -> None:
            if tx.is_yes(answer):
                draft.occurred_text = draft.occurred_text or "confirmed"
                return
            try:
                found = parse_when(answer, self.now, self.ctx.timezone)
            except FutureTime:
                raise _Answer("error.when_future") from None
            if found is None:
                raise _Answer("error.when")
            draft.occurred_at = found.at.isoformat()
            draft.occurred_just_now = found.just_now
            draft.occurred_text = tx.clean(answer, tx.MAX_SHORT_CHARS).text

        self.handle(text, parse)

    def parse_where(self, answer: str) -> None:
        draft = self.state.draft
        assert draft is not None
        number, rest = tx.split_leading_number(answer)
        if number is not None:
            if not 1 <= number <= len(cat.PLACES):
                raise _Answer("error.number_range", low=1, high=len(cat.PLACES))
            if rest and tx.parse_numbers(rest) is not None:
                raise _Answer("error.one_place")
            draft.place = cat.PLACES[number - 1]
            draft.place_text = tx.clean(rest, tx.MAX_SHORT_CHARS).text if rest else ""
            return
        if tx.is_yes(answer) and draft.place:
            return
        place = cat.suggest_place(answer) or _first(self.match_labels(answer, "place", cat.PLACES))
        if place:
            draft.place, draft.place_text = place, ""
        elif tx.has_words(answer) and len(answer) >= 3:
            # "in de lift", "bij de ingang": a place in their own words is a valid answer.
            draft.place, draft.place_text = "other", tx.clean(answer, tx.MAX_SHORT_CHARS).text
        else:
            raise _Answer("error.where")

    def answer_where(self, text: str) -> None:
        self.handle(text, self.parse_where)

    def answer_perpetrator(self, text: str) -> None:
        draft = self.state.draft
        assert draft is not None

        def parse(answer: str) -> None:
            number, rest = tx.split_leading_number(answer)
            if number is not None:
                if not 1 <= number <= len(cat.PERPETRATORS):
                    raise _Answer("error.number_range", low=1, high=len(cat.PERPETRATORS))
                draft.perpetrator = cat.PERPETRATORS[number - 1]
                draft.perpetrator_text = tx.clean(rest, tx.MAX_SHORT_CHARS).text if rest else ""
                return
            if tx.is_yes(answer) and draft.perpetrator:
                return
            matched = _first(self.match_labels(answer, "perpetrator", cat.PERPETRATORS))
            if matched:
                draft.perpetrator = matched
            elif tx.has_words(answer):
                draft.perpetrator = draft.perpetrator or "other"
                draft.perpetrator_text = tx.clean(answer, tx.MAX_SHORT_CHARS).text
            else:
                raise _Answer("error.perpetrator")

        self.handle(text, parse)

    def answer_consequences(self, text: str) -> None:
        draft = self.state.draft
        assert draft is not None

        def parse(answer: str) -> None:
            numbers = tx.parse_numbers(answer)
            if tx.is_no(answer):
                draft.consequences = []
            elif numbers is not None:
                if any(not 1 <= n <= len(cat.CONSEQUENCES) for n in numbers):
                    raise _Answer("error.number_range", low=0, high=len(cat.CONSEQUENCES))
                draft.consequences = [cat.CONSEQUENCES[n - 1] for n in sorted(numbers)]
            elif tx.is_yes(answer) and draft.consequences is not None:
                return
            else:
                found = self.match_labels(answer, "consequence", cat.CONSEQUENCES)
                if cat.suggest_injury(answer) and "injury" not in found:
                    found.append("injury")
                if not found:
                    raise _Answer("error.consequences")
                draft.consequences = [c for c in cat.CONSEQUENCES if c in found]

        self.handle(text, parse)

    def answer_wishes(self, text: str) -> None:
        draft = self.state.draft
        assert draft is not None

        def parse(answer: str) -> None:
            if tx.is_yes(answer):
                selected = self.wish_selection()
            elif tx.is_no(answer):
                selected = set()
            else:
                numbers = tx.parse_numbers(answer)
                if numbers is None:
                    folded = tx.fold(answer)
                    selected = set(self.match_labels(answer, "wish", cat.WISHES))
                    selected |= {w for w, words in _WISH_WORDS.items() if any(x in folded for x in words)}
                    if not selected:
                        raise _Answer("error.wishes")
                elif any(not 1 <= n <= len(cat.WISHES) for n in numbers):
                    raise _Answer("error.number_range", low=0, high=len(cat.WISHES))
                else:
                    selected = {cat.WISHES[n - 1] for n in numbers}
            draft.contact = "contact" in selected
            # Only an explicit "nothing" declines aftercare; not ticking it leaves the check-in open.
            explicit_none = not selected
            draft.aftercare = ("yes" if "aftercare_yes" in selected
                               else "later" if "aftercare_later" in selected
                               else "no" if explicit_none else None)
            draft.police_report = "police_report" in selected
            draft.police_came = "police_came" in selected
            draft.anonymous = "anonymous" in selected

        self.handle(text, parse)

    def answer_summary(self, text: str) -> None:
        draft = self.state.draft
        assert draft is not None
        if not text:
            self.say("error.empty")
            self.ask("summary", repeat=True)
            return
        if tx.is_send(text):
            self.effects.append(SubmitReport(draft))
            self.state.relay_reference = self.state.relay_until = None  # a new report, a new follow-up
            self.state.draft = None
            self.state.step = "idle"
            self.state.history = []
            self.state.editing = False
            return
        number = tx.parse_change(text)
        if number in SUMMARY_LINES:
            self.state.editing = True
            self.state.step = SUMMARY_LINES[number]
            self.replies.append(getattr(self, f"question_{self.state.step}")())
            return
        self.fail(_Answer("error.summary"), text)

    def answer_confirm_cancel(self, text: str) -> None:
        command = tx.parse_command(text)
        if tx.is_yes(text) or (command and command.name == "cancel"):
            draft = self.state.draft
            if draft and draft.attachments:
                self.effects.append(DiscardDraft(draft.draft_id))
            self.state.draft = None
            self.state.step = "idle"
            self.state.history = []
            self.state.editing = False
            self.state.before_cancel = None
            self.say("cancel.done")
            return
        if tx.is_no(text) or (command and command.name == "back"):
            self.state.step = self.state.before_cancel or "summary"
            self.state.before_cancel = None
            self.say("cancel.kept")
            self.ask(self.state.step, repeat=True)
            return
        self.replies.append(self.question_confirm_cancel())


def _codes(value, allowed: tuple[str, ...]) -> list[str]:
    """Codes from a form field ("verbal,threat" or a list), keeping only known ones, in order."""
    items = value if isinstance(value, list) else str(value or "").split(",")
    chosen = {str(item).strip() for item in items}
    return [code for code in allowed if code in chosen]


def _too_short_for_a_story(text: str) -> bool:
    """One word that names no incident ("oppakken", "ok") opens the conversation, it is no story."""
    return len(text.split()) < 2 and not cat.suggest_kinds(text)


def _leading_numbers(text: str) -> tuple[list[int], str]:
    """`3 12 bij de ingang` -> ([3, 12], "bij de ingang")."""
    numbers: list[int] = []
    rest = text.strip()
    while True:
        number, remainder = tx.split_leading_number(rest.lstrip(",;&+ "))
        if number is None:
            break
        numbers.append(number)
        rest = remainder
        if rest.lower().startswith(("en ", "and ")):
            rest = rest.split(" ", 1)[1]
    return numbers, rest.strip(" ,;")


def _first(items: list[str]) -> str | None:
    return items[0] if items else None


def _size(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f} MB"
    if size >= 1024:
        return f"{size // 1024} kB"
    return f"{size} B"


def step(state: State | None, user_input: UserInput, context: Context | None = None) -> Turn:
    """Advance the conversation by one inbound message. Pure: no I/O, never raises on input."""
    context = context or Context()
    state = state or State(language=context.default_language)
    return _Dialogue(state, user_input, context).run()


def record_submission(state: State, reference: str, now: dt.datetime, form_id: str | None = None) -> State:
    """The state after the engine saved a report: remembers the reference for late evidence."""
    forms = dict(state.submitted_forms)
    if form_id:
        forms[form_id] = reference
        forms = dict(list(forms.items())[-20:])
    return replace(state, last_reference=reference, last_submitted_at=now.isoformat(), submitted_forms=forms)


#: How long after a coordinator's message the reporter's free text still goes to them.
RELAY_WINDOW = dt.timedelta(days=3)


def late_evidence_case(state: State, now: dt.datetime) -> str | None:
    """The case that files sent now would join as late evidence (None: they join a draft)."""
    if state.step != "idle" and state.draft is not None:
        return None
    return _recent_reference(state, now)


def _recent_reference(state: State, now: dt.datetime) -> str | None:
    """The last report's reference while late evidence may still join it."""
    if not (state.last_reference and state.last_submitted_at):
        return None
    submitted_at = dt.datetime.fromisoformat(state.last_submitted_at)
    return state.last_reference if now - submitted_at <= EVIDENCE_WINDOW else None


def discard_draft(state: State) -> State:
    """The state once an unfinished report was discarded (e.g. expired): idle, nothing pending."""
    return replace(state, draft=None, step="idle", history=[], editing=False, before_cancel=None)


def open_relay(state: State, reference: str, now: dt.datetime) -> State:
    """The state after a coordinator wrote to the reporter: their free text is an answer (for 3 days)."""
    return replace(state, relay_reference=reference, relay_until=(now + RELAY_WINDOW).isoformat())


def submitted(language: str, reference: str, draft: Draft, context: Context, deferred: bool = False) -> tuple[Reply, ...]:
    """The confirmation after a report was saved: reference, what happens next, 112, aftercare."""
    t = Translator(language)
    parts = [t("submitted.saved", reference=reference)]
    if deferred:
        parts.append(t("submitted.deferred"))
    promise = context.contact_promise.get(language) or t("submitted.contact_default")
    parts.append(promise if draft.contact is not False else t("submitted.no_contact"))
    if draft.police_report:
        parts.append(t("submitted.police"))
    aftercare = context.aftercare.get(language) or t("submitted.aftercare_default")
    parts.append(aftercare)
    parts.append(t("submitted.emergency"))
    parts.append(t("submitted.more"))
    return (Reply("\n\n".join(parts), title=t("submitted.title")),)


def my_reports(language: str, cases: list[dict]) -> tuple[Reply, ...]:
    """The reporter's own cases: reference, date, kinds and status."""
    t = Translator(language)
    if not cases:
        return (Reply(t("my_reports.none")),)
    lines = []
    for case in cases:
        created = format_datetime(case["created_at"], "d MMM y", locale=language)
        kinds = ", ".join(t(f"kind.{k}") for k in case.get("kinds") or ())
        lines.append(f"• {case['reference']} ({created}): {kinds or '—'} — {t('status.' + case['status'])}")
    return (Reply("\n".join(lines), title=t("my_reports.title")),)


def not_saved(language: str, error_reference: str) -> tuple[Reply, ...]:
    """The answer when the database could not save the turn: nothing was kept, try again."""
    return (Reply(Translator(language)("error.not_saved", error=error_reference)),)
