"""Tools for the demo and the tests: a private Synapse homeserver, a scripted Matrix chat client
and `meldbot demo`."""
