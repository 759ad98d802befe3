"""Transactional and bulk sending (issue 18): the HTTP API, API keys, delivery events and
webhooks, bounce and complaint processing, suppression, one-click unsubscribe, stats."""
