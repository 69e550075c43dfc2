"""Certificates that renew themselves and a TLSA rollover that never breaks DANE.

RFC 7671 §8.1 (and `../shared/research/tlsa-rollover.md`): a key is served only after its
`3 1 1` record has been on every authoritative server, with a valid RRSIG, for two TTLs; the
old record goes only once every endpoint serves the new key. `machine.py` decides each step
from what was observed (pure), `keys.py` makes keys and CSRs, the adapters observe the
nameservers and endpoints and hold the keys, and `parts/certificate.py` runs it for a
MailDomain.
"""
