"""Repository functions, one module per domain: verb-first, the session always a keyword-only
argument. None of them commit: the caller owns the transaction, so everything one turn changes
(state, case, events, outbox rows) is written together or not at all."""

from .access import (  # noqa: F401
    add_audit,
    add_claim_code,
    add_login_link,
    create_web_session,
    end_web_session,
    get_login_link,
    get_web_session,
    list_audit,
    mark_web_session_checked,
    prune_claim_codes,
    prune_logins,
    touch_web_session,
    use_claim_code,
    use_login_link,
)
from .attachments import (  # noqa: F401
    MAX_INLINE_ATTACHMENT,
    add_attachment,
    count_case_files,
    delete_draft_attachments,
    get_case_attachment,
    attachment_chunks,
    link_draft_attachments,
    list_attachments,
    read_attachment,
    read_attachment_chunk,
)
from .cases import (  # noqa: F401
    REFERENCE_ALPHABET,
    REFERENCE_PREFIX,
    NewCase,
    add_case_event,
    assign_case,
    count_recent_reports,
    create_case,
    get_case,
    get_case_by_id,
    is_reporter_of,
    list_case_events,
    list_cases,
    list_cases_for_reporter,
    lock_case,
    new_reference,
    normalise_reference,
    reporter_conversation_id,
)
from .facts import (  # noqa: F401
    CONSEQUENCES,
    KIND_BITS,
    MEASURE_BITS,
    MEASURES,
    bits_of,
    codes_of,
    FactRules,
    fact_values,
    refresh_fact,
    set_fact_rules,
    sync_facts,
)
from .conversations import (  # noqa: F401
    due_draft_conversation,
    find_conversation,
    get_conversation,
    get_or_create_conversations,
    save_conversation_state,
    save_conversation_states,
    set_draft_timers,
)
from .events import (  # noqa: F401
    is_event_handled,
    mark_event_handled,
    mark_events_handled,
    prune_handled_events,
)
from .platform_state import (  # noqa: F401
    get_platform_state,
    get_platform_state_version,
    put_platform_state,
)
from .outbox import (  # noqa: F401
    QueuedMessage,
    claim_due_messages,
    count_pending_messages,
    enqueue_message,
    has_due_messages,
    mark_message_delivered,
    mark_message_failed,
    next_due_time,
)
from .quotas import (  # noqa: F401
    add_file_usage,
    get_file_usage,
    prune_file_usage,
)
from .reporters import (  # noqa: F401
    find_reporter,
    get_reporter,
    upsert_reporter,
)
from .threads import (  # noqa: F401
    delete_case_threads,
    get_case_by_thread,
    get_case_thread,
    list_case_threads,
    set_case_thread,
)
from .timers import (  # noqa: F401
    cancel_timers,
    claim_due_timer,
    finish_timer,
    list_timers,
    next_timer_due,
    schedule_timer,
)
from .retention import (  # noqa: F401
    purge_case,
)
from .retention import (  # noqa: F401
    DuePurge,
    Leftovers,
    RetentionRules,
    list_due_notices,
    list_due_purges,
    lock_for_purge,
    mark_purge_notice,
    sweep_leftovers,
)
