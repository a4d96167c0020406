"""Microsoft Teams through botbuilder 4.17.1: `adapter` (the `TeamsAdapter`) built from `channel`
(coordinator channel), `inbound` and `outbound`; `settings` (start-up checks), strict `auth`,
`cards`, `markdown` escaping, `files` downloads, SDK `fixes` and the app `package`."""
