pytest_plugins = ["tests.fixtures_controlplane", "tests.fixtures_dns", "tests.fixtures_operator"]
