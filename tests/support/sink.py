"""Moved to holdscan.lab.sink (the demo uses it too); kept so tests read naturally."""
from holdscan.lab.sink import *  # noqa: F401,F403
