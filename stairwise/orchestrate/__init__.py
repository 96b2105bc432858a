"""Runs made of other runs, and the one place a live run starts.

``live.py`` points a scenario at where it runs and runs it live once (what must happen
before or after every live run — an engine probe, say — goes there); ``validation.py`` runs a
scenario live, simulated from the file and trace-driven, and compares them, alone or as a
suite. ``reports/`` only renders what these return.
"""
