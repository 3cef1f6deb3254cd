"""Moved to holdscan.lab.redis (the demo uses it too); kept so tests read naturally."""
from holdscan.lab.redis import *  # noqa: F401,F403
