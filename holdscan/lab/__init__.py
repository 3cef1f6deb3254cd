"""A private lab of real parts on loopback ports and in temporary directories —
Postfix, Redis, clamd, an SMTP sink, holdscan's own processes — for the demo,
the tests and the benchmarks. Nothing here touches a real mail system except
adding (and removing) the lab's directory to Postfix's alternate_config_directories."""
