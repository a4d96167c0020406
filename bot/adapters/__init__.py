"""Chat platforms: `contract.py` is the one protocol every platform implements, `common.py` the
helpers they share (state files, send-or-defer, error mapping, option lists); `console.py`, `matrix/`
and `teams/` translate platform events to `InboundMessage`s and neutral replies to platform calls.
Adapters never open a database session and never change a case."""
