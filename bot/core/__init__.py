"""The core: the engine (a turn per message, in one transaction; coordinator commands; login),
case work (one function per follow-up action), coordinator notifications and working time."""
