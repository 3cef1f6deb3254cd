"""Moved to holdscan.lab.postfix (the demo uses it too); kept so tests read naturally."""
from holdscan.lab.postfix import *  # noqa: F401,F403
