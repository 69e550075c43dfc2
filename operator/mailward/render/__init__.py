"""Rendering: pure functions from a MailDomain to what should exist (records, configs, texts)."""
