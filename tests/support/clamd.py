"""Moved to holdscan.lab.clamd (the demo uses it too); kept so tests read naturally."""
from holdscan.lab.clamd import (  # noqa: F401
    CLAMD,
    DETECTED_AS,
    EICAR,
    SIGNATURE,
    ClamdError,
    ClamdServer,
    available,
    free_port,
)
