"""Moved to holdscan.lab.cluster (the demo uses it too); kept so tests read naturally."""
from holdscan.lab.cluster import *  # noqa: F401,F403
