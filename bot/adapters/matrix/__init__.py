"""Matrix (Element) through matrix-nio with end-to-end encryption: `adapter` (start-up, login, the
`MatrixAdapter` itself) built from `sync` (sync loop, room queues, token), `direct` (direct chats),
`inbound` and `outbound`; `format` (message content) and `media` (capped downloads)."""
