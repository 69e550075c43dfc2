"""The check catalog: stable IDs from tr03108-requirements.md, a level per profile, a remedy.

IDs never change meaning once published: the operator's status, the Prometheus series and the
JSON reports of the CLI are keyed by them. Profiles:

- `tr-03108`: BSI TR-03108 v2.0 with TR-03116-4 (2025) and, for SPF/DMARC, TR-03182.
- `baseline`: what the RFCs themselves require; TR-only rules (brainpool, no wildcards, DNSSEC,
  DANE, the TR-03116-4 suite list) drop to SHOULD or INFO.

Where a feature is optional but, once published, governed by MUSTs of its RFC (MTA-STS: SHOULD
in TR-03108, yet a broken published policy blocks mail), the checks of the published artefact
are MUST and only "not published" is a SHOULD (`TR-STS-01`).
"""

from __future__ import annotations

from dataclasses import dataclass

from mailward.compliance.model import Level

PROFILES = ("tr-03108", "baseline")
DEFAULT_PROFILE = "tr-03108"

M, S, I = Level.MUST, Level.SHOULD, Level.INFO  # noqa: E741


@dataclass(frozen=True)
class Check:
    id: str
    group: str
    title: str
    levels: dict[str, Level]
    remedy: str
    reference: str

    def level(self, profile: str) -> Level:
        return self.levels[profile]


def _c(id: str, group: str, title: str, tr: Level, base: Level, remedy: str, ref: str) -> Check:
    return Check(id, group, title, {"tr-03108": tr, "baseline": base}, remedy, ref)


CATALOG: tuple[Check, ...] = (
    # -- DNS / DNSSEC ---------------------------------------------------------------------------
    _c(
        "TR-DANE-01",
        "DNSSEC",
        "Domain and MX zones DNSSEC-signed and validated (AD), DS present",
        M,
        S,
        "Sign the zones of the domain and of every MX host and publish their DS in the "
        "parent; a bogus answer means a DS or signature is wrong.",
        "TR-03108-05-M; RFC 4033",
    ),
    _c(
        "TR-DANE-08",
        "DNSSEC",
        "DNSSEC algorithm recommended by RFC 8624",
        S,
        I,
        "Sign with ECDSAP256SHA256 (13), Ed25519 (15) or RSASHA256 (8).",
        "RFC 8624",
    ),
    # -- SMTP -----------------------------------------------------------------------------------
    _c(
        "TR-GEN-06",
        "SMTP",
        "STARTTLS offered and negotiated on every MX, with a PFS suite",
        M,
        M,
        "Enable STARTTLS on port 25 of every MX (Postfix: smtpd_tls_security_level = may) "
        "and prefer (EC)DHE suites.",
        "TR-03108-03-M; RFC 3207",
    ),
    _c(
        "TR-SMTP-02",
        "SMTP",
        "Pre-TLS input discarded after STARTTLS (command injection)",
        M,
        M,
        "Update the MTA: it must flush buffered plaintext commands when TLS starts "
        "(CVE-2011-0411).",
        "RFC 3207 §4.2",
    ),
    _c(
        "TR-SMTP-03",
        "SMTP",
        "Relaying refused for a foreign recipient",
        M,
        M,
        "Allow relaying only for authenticated clients and own networks (Postfix: "
        "smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, "
        "reject_unauth_destination).",
        "RFC 5321 §7.9; RFC 2505",
    ),
    _c(
        "TR-SMTP-04",
        "SMTP",
        "VRFY never verifies falsely; a disabled VRFY answers 252",
        M,
        M,
        "Answer VRFY with 252 or disable it; never answer 250 for an address that was not "
        "verified.",
        "RFC 5321 §3.5.3, §7.3",
    ),
    _c(
        "TR-SMTP-05",
        "SMTP",
        "Banner (information only)",
        I,
        I,
        "Nothing required; RFC 5321 §7.5 even allows the software version.",
        "RFC 5321 §7.5",
    ),
    # -- TLS --------------------------------------------------------------------------------------
    _c(
        "TR-TLS-01",
        "TLS",
        "TLS 1.2 supported, nothing older (TLS 1.3 recommended)",
        M,
        M,
        "Allow only TLS 1.2 and 1.3 (Postfix: smtpd_tls_protocols = >=TLSv1.2). On port 25 "
        "older versions are tolerated as a warning (TR-03108 §4.3.2).",
        "TR-03116-4 §2.1.1",
    ),
    _c(
        "TR-TLS-02",
        "TLS",
        "Mandatory suite ECDHE_{ECDSA,RSA}_WITH_AES_128_GCM_SHA256 supported",
        M,
        I,
        "Enable ECDHE-ECDSA-AES128-GCM-SHA256 (ECDSA key) or ECDHE-RSA-AES128-GCM-SHA256 "
        "(RSA key).",
        "TR-03116-4 §2.2.1.2",
    ),
    _c(
        "TR-TLS-03",
        "TLS",
        "Only allow-listed TLS 1.2 suites, in server order",
        M,
        S,
        "Restrict the TLS 1.2 cipher list to the TR-02102-2 suites (ECDHE/DHE with AES-GCM, "
        "AES-CBC-SHA256/384 or AES-CCM) and enforce the server's order (Postfix: "
        "tls_preempt_cipherlist = yes). On port 25 others may follow at lower priority.",
        "TR-02102-2 Table 1; TR-03108 §4.3.2",
    ),
    _c(
        "TR-TLS-04",
        "TLS",
        "Groups secp256r1 and brainpoolP256r1 supported",
        M,
        I,
        "Offer both groups (Postfix: tls_eecdh_auto_curves = brainpoolP256r1 prime256v1 "
        "secp384r1).",
        "TR-03116-4 §2.2.2",
    ),
    _c(
        "TR-TLS-06",
        "TLS",
        "TLS 1.3 suites within TLS_AES_128_GCM, TLS_AES_256_GCM, TLS_AES_128_CCM",
        M,
        I,
        "Restrict the TLS 1.3 suites (OpenSSL `Ciphersuites`; Postfix: tls_config_file) to "
        "TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384 and TLS_AES_128_CCM_SHA256; on port 25 "
        "others are tolerated as a warning (TR-03108 §4.3.2).",
        "TR-03116-4 §2.3",
    ),
    _c(
        "TR-TLS-07",
        "TLS",
        "No TLS compression, secure renegotiation (RFC 5746) only",
        M,
        M,
        "Disable TLS compression and insecure legacy renegotiation.",
        "TR-02102-2 §3.3.4; RFC 5746; RFC 7457",
    ),
    _c(
        "TR-TLS-08",
        "TLS",
        "Server key size (RSA >= 3000 bit, EC >= 250 bit)",
        M,
        S,
        "Use an ECDSA P-256 key or RSA with at least 3072 bits.",
        "TR-02102-2 key lengths",
    ),
    # -- Certificates -----------------------------------------------------------------------------
    _c(
        "TR-CERT-01",
        "Certificate",
        "No wildcard names in the certificate",
        M,
        I,
        "Issue a certificate naming each host explicitly.",
        "TR-03116-4 §6.1.2",
    ),
    _c(
        "TR-CERT-02",
        "Certificate",
        "Certificate profile (KeyUsage critical, CRL/OCSP, validity)",
        M,
        I,
        "Use a CA that sets a critical KeyUsage, a CRL distribution point or OCSP URL and "
        "issues end-entity certificates for at most three years.",
        "TR-03116-4 §6.1.2",
    ),
    _c(
        "TR-CERT-03",
        "Certificate",
        "Certificate signature algorithms (ECDSA/RSA-PSS, SHA-2)",
        M,
        I,
        "Use a chain signed with ECDSA-SHA256/384 or RSASSA-PSS; RSASSA-PKCS1-v1_5 only "
        "until 2025.",
        "TR-03116-4 §6.1.4",
    ),
    _c(
        "TR-CERT-05",
        "Certificate",
        "Chain trusted, name matches, certificate within validity",
        M,
        S,
        "Serve the full chain of a trusted CA for the host name and renew before expiry.",
        "RFC 5280; TR-03108-P E-05",
    ),
    # -- DANE -------------------------------------------------------------------------------------
    _c(
        "TR-DANE-02",
        "DANE",
        "Secure TLSA at _25._tcp of every MX matching the served chain",
        M,
        S,
        "Publish `3 1 1 <sha256 of the SPKI>` at _25._tcp.<mx> in a signed zone and keep it "
        "in step with the served key.",
        "TR-03108-05-M; RFC 7672",
    ),
    _c(
        "TR-DANE-03",
        "DANE",
        "TLSA 3 1 1 (DANE-EE, SPKI, SHA2-256) used",
        S,
        I,
        "Prefer `3 1 1` records; `2 0 1` is the second choice.",
        "RFC 7672 §3.1",
    ),
    _c(
        "TR-DANE-04",
        "DANE",
        "Two or more TLSA records (rollover) with a short TTL",
        S,
        I,
        "Publish a second record (the next key, or `2 1 1` of the issuing CA) and a TTL of "
        "about 600 s.",
        "TR-03108 §4.1.5; RFC 7671 §8",
    ),
    _c(
        "TR-DANE-05",
        "DANE",
        "No PKIX-TA(0) / PKIX-EE(1) usages for SMTP",
        S,
        S,
        "Replace usage 0/1 records by DANE-EE(3) or DANE-TA(2); SMTP clients ignore PKIX usages.",
        "RFC 7672 §3.1.3",
    ),
    _c(
        "TR-DANE-06",
        "DANE",
        "Next key published before the certificate expires",
        S,
        I,
        "Publish the TLSA record of the next key at least two TTLs before switching "
        "(current + next).",
        "RFC 7671 §8.1",
    ),
    # -- MTA-STS ----------------------------------------------------------------------------------
    _c(
        "TR-STS-01",
        "MTA-STS",
        "_mta-sts TXT record: published, v=STSv1, valid id",
        S,
        I,
        'Publish exactly one `_mta-sts.<domain> TXT "v=STSv1; id=<1-32 alphanumerics>"`.',
        "RFC 8461 §3.1; TR-03108-07-R",
    ),
    _c(
        "TR-STS-02",
        "MTA-STS",
        "Policy fetched: 200 without redirect, text/plain, valid cert",
        M,
        M,
        "Serve https://mta-sts.<domain>/.well-known/mta-sts.txt directly (no redirect) as "
        "text/plain with a trusted, non-wildcard certificate for mta-sts.<domain>.",
        "RFC 8461 §3.3; TR-03108-08-R",
    ),
    _c(
        "TR-STS-03",
        "MTA-STS",
        "Policy syntax (version, mode, max_age, mx)",
        M,
        M,
        "Fix the policy: `version: STSv1`, `mode: enforce|testing|none`, `max_age` <= "
        "31557600 and one `mx:` line per MX pattern.",
        "RFC 8461 §3.2",
    ),
    _c(
        "TR-STS-04",
        "MTA-STS",
        "Every MX matched by the policy and PKIX-valid",
        M,
        M,
        "List every MX host (or a matching *.domain pattern) in the policy and serve a "
        "trusted certificate for its name.",
        "RFC 8461 §4",
    ),
    # -- TLSRPT -----------------------------------------------------------------------------------
    _c(
        "TR-RPT-01",
        "TLSRPT",
        "_smtp._tls TXT: v=TLSRPTv1, mailto: present, no https:",
        M,
        M,
        'Publish `_smtp._tls.<domain> TXT "v=TLSRPTv1; rua=mailto:<mailbox>"`; TR-03108 '
        "forbids https: report URIs.",
        "TR-03108-10-M; RFC 8460 §3",
    ),
    # Deliverability of the report mailbox is what makes TR-RPT-01 worth anything, so a mailbox
    # without a mail route fails (MUST); its MX enforcing DANE/MTA-STS is the SHOULD NOT of
    # TR-03108-10-M and only ever warns, whatever the level.
    _c(
        "TR-RPT-02",
        "TLSRPT",
        "TLSRPT mailbox receives mail, without DANE/MTA-STS enforcement",
        M,
        S,
        "Point the rua mailbox at a domain that receives mail (an MX with an address, or an "
        "A/AAAA) and whose MX has no TLSA at _25._tcp and no MTA-STS policy in mode enforce, "
        "e.g. the mailward collector at tlsrpt.<domain>.",
        "TR-03108-10-M; RFC 8460 §3, §5.3; RFC 5321 §5.1; RFC 7505",
    ),
    # -- Email authentication ----------------------------------------------------------------------
    _c(
        "TR-AUTH-01",
        "Authentication",
        "SPF record valid, ending in ~all or -all",
        M,
        S,
        "Publish one `v=spf1 ... -all` record within the RFC 7208 lookup limits.",
        "TR-03182-01-M; RFC 7208",
    ),
    _c(
        "TR-AUTH-02",
        "Authentication",
        "DKIM keys at known selectors (rsa-sha256 and ed25519)",
        S,
        I,
        "Publish DKIM keys (RSA 2048 and Ed25519) and sign all outgoing mail.",
        "TR-03182-03/04-M; RFC 8463",
    ),
    _c(
        "TR-AUTH-03",
        "Authentication",
        "DMARC: v=DMARC1 then p=quarantine|reject, rua present",
        M,
        S,
        'Publish `_dmarc.<domain> TXT "v=DMARC1; p=reject; rua=mailto:<mailbox>"`.',
        "TR-03182-06-M; RFC 7489 §6.3",
    ),
    # -- Mail clients ---------------------------------------------------------------------------
    _c(
        "TR-GEN-01",
        "Clients",
        "Implicit TLS for mail clients (465/993/995) where offered",
        M,
        S,
        "Offer SUBMISSIONS (465), IMAPS (993) and POP3S (995) with TLS per TR-03116-4.",
        "TR-03108-01-M; RFC 8314",
    ),
    _c(
        "TR-GEN-02",
        "Clients",
        "Clients steered to implicit TLS (SRV and/or autoconfig)",
        M,
        I,
        "Publish `_submissions._tcp`, `_imaps._tcp`, `_pop3s._tcp` SRV records (target `.` "
        "for a service not offered) or an autoconfig document.",
        "TR-03108-01-M; RFC 6186",
    ),
)

BY_ID: dict[str, Check] = {c.id: c for c in CATALOG}
GROUPS: tuple[str, ...] = tuple(dict.fromkeys(c.group for c in CATALOG))
