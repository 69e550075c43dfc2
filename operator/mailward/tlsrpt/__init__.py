"""The TLSRPT collector (RFC 8460): receives SMTP TLS reports by mail and HTTPS, keeps them, and
evaluates them per MailDomain for the operator, the command line and Prometheus.

Layout: `model` (the report document), `parse` (bytes → report, with the safety limits),
`mail` (a report out of an RFC 5322 message), `store` (SQLite or PostgreSQL), `evaluate` (pure
summaries), `server` (SMTP + HTTPS intake and the internal API), `config` (what the operator
renders for the collector).
"""
