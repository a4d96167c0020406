"""Matrix (Element) through matrix-nio with end-to-end encryption: the adapter, message formatting
and capped media downloads."""
