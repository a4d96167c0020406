"""Microsoft Teams through botbuilder 4.17.1: the adapter, strict authentication, cards, markdown escaping, file downloads, SDK fixes and the app package."""
