"""Turning results into things people read: terminal tables, HTML reports, sweep maps."""
