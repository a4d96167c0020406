"""The HTTP server (`server.py`: health check, security headers) and the coordinators' case pages
(`cases.py`: login through the chat, sessions, CSRF, the case list and page), with their templates
and stylesheet."""
