"""The comparison report: the paper's Table II and the sections beside it."""
