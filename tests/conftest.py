pytest_plugins = [
    "tests.fixtures_controlplane",
    "tests.fixtures_dns",
    "tests.fixtures_compliance",
    "tests.fixtures_operator",
    "tests.fixtures_dnspublish",
    "tests.fixtures_mta",
    "tests.fixtures_tlsrpt",
    "tests.fixtures_policy",
    "tests.fixtures_cluster",
]
