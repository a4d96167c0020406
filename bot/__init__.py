"""Meldbot's runtime, one room per concern: `adapters/` (chat platforms, translators only),
`core/` (the engine, case work, notifications, working time), `workers/` (outbox and timers),
`web/` (HTTP server and case pages), `devtools/` (demo and test tooling); `app.py` wires them,
`cli.py` is the command line, `config.py` the settings."""
