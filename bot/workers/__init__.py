"""Background workers: the outbox (delivers every queued message once, with retries) and the
durable timers (reminders, escalation, aftercare check-ins, draft expiry, housekeeping)."""
