"""matplotlib.pyplot, imported when a figure is drawn rather than when frugalnet is imported.

`import frugalnet` leaves the user's matplotlib backend alone. On a machine without a display, matplotlib's own
backend resolution falls back to the headless Agg backend, so reports are written there too.
"""
from __future__ import annotations


def pyplot():
    """The matplotlib.pyplot module (imported on first use)."""
    import matplotlib.pyplot as plt

    return plt
