pytest_plugins = ["tests.fixtures_controlplane", "tests.fixtures_operator"]
