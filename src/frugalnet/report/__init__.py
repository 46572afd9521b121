"""Results -> report.md and report.html with matplotlib plots."""
from frugalnet.report.document import Report, format_value, mean_sd

__all__ = ["Report", "format_value", "mean_sd"]
