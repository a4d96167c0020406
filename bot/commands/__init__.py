"""Command-line commands that have a module of their own (`meldbot keys ...`, `meldbot retention ...`)."""
