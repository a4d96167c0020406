"""Test support: one clock, one port helper, one recording platform and one `World` per platform
behind one interface (see `support.world.World`). The scenarios in tests/scenarios use only that
interface, so each is written once and runs on console, Matrix and Teams, on SQLite and PostgreSQL."""

from __future__ import annotations

from stack import Clock, RecordingPlatform

from bot.devtools.localserver import free_port
from support.world import Note, World

PLATFORMS = ("console", "matrix", "teams")

__all__ = ["PLATFORMS", "Clock", "Note", "RecordingPlatform", "World", "free_port", "make_world"]


def make_world(platform: str, *, tmp_path, synapse=None, keys=None) -> World:
    """A World of the given platform (not started). Matrix needs the session's Synapse, Teams the keys."""
    if platform == "console":
        from support.console import ConsoleWorld

        return ConsoleWorld(tmp_path)
    if platform == "matrix":
        from support.matrix import MatrixWorld

        return MatrixWorld(synapse, tmp_path)
    if platform == "teams":
        from support.teams import TeamsScenarioWorld

        return TeamsScenarioWorld(keys, tmp_path)
    raise ValueError(platform)
