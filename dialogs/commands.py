"""Commands that work at any step: help, language, house rules, norm card, my reports, my data,
withdraw, report, department, stop/cancel (and its confirmation), back and skip."""

from __future__ import annotations

from dataclasses import replace

from . import department as dep
from . import text as tx
from .i18n import LANGUAGES
from .model import DiscardDraft, ListMyReports, Reply, ShowMyData, WithdrawReport
from .questions import (advance, ask, finish_department, keep_department, question, question_confirm_cancel,
                        repeat_question)
from .turn import TurnContext

#: Commands that work at any moment, even while a cancel waits for confirmation.
ANYTIME = ("language", "help", "house_rules", "norm", "my_reports", "my_data", "withdraw")


def command(c: TurnContext, cmd: tx.Command) -> None:
    name = cmd.name
    if name == "language":
        c.state.language_chosen = True
        c.set_language(cmd.arg if cmd.arg in LANGUAGES else c.state.language)
        c.say("language.set")
        repeat_question(c)
    elif name == "help":
        c.replies.append(help_reply(c))
        repeat_question(c)
    elif name == "house_rules":
        c.replies.append(Reply(_context_text(c, c.ctx.house_rules, "house_rules.missing")))
        repeat_question(c)
    elif name == "norm":
        c.replies.append(Reply(_context_text(c, c.ctx.norm_card, "norm.missing")))
        repeat_question(c)
    elif name == "my_reports":
        # The engine sends the list; outside a report that list is the whole answer (no idle prompt).
        c.effects.append(ListMyReports())
        repeat_question(c, after_effect=True)
    elif name == "my_data":
        c.effects.append(ShowMyData())
        repeat_question(c, after_effect=True)
    elif name == "withdraw":
        if cmd.arg:
            c.effects.append(WithdrawReport(cmd.arg))
            repeat_question(c, after_effect=True)
        else:
            c.say("withdraw.usage")
            repeat_question(c)
    elif name == "report":
        start_report(c)
    elif name == "department":
        department_command(c, cmd.arg)
    elif c.state.step == "department" and (name in ("back", "skip") or not c.in_dialogue()):
        # In a report, `stop` still stops the report; outside one it only ends this question.
        keep_department(c, skipped=name == "skip")
    elif name == "cancel":
        cancel(c)
    elif name == "back":
        go_back(c)
    elif name == "skip":
        skip(c)


def _context_text(c: TurnContext, texts: dict[str, str], missing_key: str) -> str:
    """An organisation's text in the reporter's language, else the default language, else a notice."""
    return texts.get(c.state.language) or texts.get(c.ctx.default_language) or c.t(missing_key)


def help_reply(c: TurnContext) -> Reply:
    body = c.t("help.body")
    if c.ctx.departments:
        # One more item in the list, before its closing line (the emergency number).
        items, _, closing = body.rpartition("\n")
        body = f"{items}\n{c.t('help.department')}\n{closing}" if items else f"{body}\n{c.t('help.department')}"
    if c.in_dialogue():
        body = c.t("help.in_dialogue") + "\n\n" + body
    return Reply(body, title=c.t("help.title"))


def start_report(c: TurnContext) -> None:
    if c.in_dialogue():
        c.say("report.already_busy")
        repeat_question(c)
    else:
        if not c.state.introduced:
            c.state.introduced = True
            c.say("intro", organisation=c.ctx.organisation)
        c.start_draft()
        ask(c, "story", push=False)
    if c.replies:
        c.replies[-1] = replace(c.replies[-1], offer_form=True, form_values=_form_values(c))


def _form_values(c: TurnContext) -> dict | None:
    """A story typed before `melden` fills the form, with the kinds and place read from it; with
    departments configured, the form offers them, the remembered one chosen."""
    draft = c.state.draft
    values: dict = {}
    if draft is not None and draft.story:
        values.update(story=draft.story, kinds=list(draft.kinds or ()), place=draft.place)
    if c.ctx.departments:
        values["departments"] = [[code, name] for code, name in c.ctx.departments]
        values["department"] = c.state.department if c.state.department in dep.codes(c) else None
    return values or None


# -- the department ------------------------------------------------------------------------------------

def department_command_fits(c: TurnContext, cmd: tx.Command) -> bool:
    """`afdeling` is a command only when the organisation has departments, and `afdeling <x>` only
    when x names one (else the message is read as usual: a story may start with the word)."""
    if not c.ctx.departments:
        return False
    return not cmd.arg or dep.match(c, cmd.arg) is not None


def department_command(c: TurnContext, arg: str) -> None:
    """`afdeling Burgerzaken` sets it at once; `afdeling` asks it, in or outside a report."""
    step = c.state.step
    if arg:
        code = dep.match(c, arg)
        dep.choose(c, code)
        c.say("department.saved", name=dep.name(c, code))
        if step == "department":
            finish_department(c)
        else:
            repeat_question(c, after_effect=True)
        return
    if step == "department":
        ask(c, "department", repeat=True)
    elif c.in_dialogue() and step == "summary":
        c.state.editing = True  # as `wijzig 7`: answering returns to the summary
        c.state.step = "department"
        c.replies.append(question(c, "department"))
    elif c.in_dialogue():
        c.state.department_return = step  # answered, the interrupted question comes back
        c.state.step = "department"
        c.replies.append(question(c, "department"))
    else:
        c.state.step = "department"  # outside a report: a question of its own, then idle again
        c.replies.append(question(c, "department"))


def cancel(c: TurnContext) -> None:
    if not c.in_dialogue() and c.state.pending_relay is not None:
        c.state.pending_relay = None  # neither sent to the coordinator nor reported
        c.say("relay.dropped")
        return
    if not c.in_dialogue():
        c.say("cancel.nothing")
        return
    c.state.before_cancel = c.state.step
    c.state.step = "confirm_cancel"
    c.replies.append(question_confirm_cancel(c))


def answer_confirm_cancel(c: TurnContext, text: str) -> None:
    cmd = tx.parse_command(text)
    if tx.is_yes(text) or (cmd and cmd.name == "cancel"):
        draft = c.state.draft
        if draft and draft.attachments:
            c.effects.append(DiscardDraft(draft.draft_id))  # the engine deletes the stored files
        c.end_draft()
        c.state.before_cancel = None
        c.say("cancel.done")
        return
    if tx.is_no(text) or (cmd and cmd.name == "back"):
        c.state.step = c.state.before_cancel or "summary"
        c.state.before_cancel = None
        c.say("cancel.kept")
        ask(c, c.state.step, repeat=True)
        return
    c.replies.append(question_confirm_cancel(c))


def go_back(c: TurnContext) -> None:
    if not c.in_dialogue():
        c.say("back.nothing")
        return
    if c.state.editing and c.state.step != "summary":
        ask(c, "summary", push=False)  # `terug` while changing a line returns to the summary
        return
    if not c.state.history:
        c.say("back.first")
        ask(c, c.state.step, repeat=True)
        return
    previous = c.state.history.pop()
    c.state.editing = False
    ask(c, previous, push=False)


def skip(c: TurnContext) -> None:
    step = c.state.step
    if not c.in_dialogue():
        c.say("skip.nothing")
    elif step == "story":
        c.say("skip.story")
        ask(c, "story", repeat=True)
    elif step == "summary" and dep.pending(c):
        c.state.department_asked = True  # `overslaan` on the first summary skips the department question
        c.say("department.skipped")
        ask(c, "summary", repeat=True)
    elif step == "summary":
        c.say("skip.summary")
        ask(c, "summary", repeat=True)
    else:
        c.say("skip.done")
        advance(c)
