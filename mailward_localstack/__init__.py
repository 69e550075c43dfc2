"""The local stack: real servers on loopback for the tests and the demo (never for production)."""
