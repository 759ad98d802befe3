"""The operations layer on the http role (issue 19): metrics and health, client
autoconfiguration and MTA-STS, the web admin and self-service pages (docs/web.md)."""
