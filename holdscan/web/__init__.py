"""holdscan's web face of the quarantine (`holdscan web`; docs/web.md)."""
