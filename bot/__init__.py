"""Meldbot's runtime: configuration, engine, outbox, platform adapters, web server and CLI."""
