"""Microsoft Teams: everything botbuilder-specific lives in this package."""
