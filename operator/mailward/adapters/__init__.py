"""I/O adapters: the only modules that talk to the Kubernetes API, DNS servers or remote hosts."""
