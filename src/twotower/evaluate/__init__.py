"""One evaluation protocol for every model and baseline: leave-one-out by time, full ranking."""
