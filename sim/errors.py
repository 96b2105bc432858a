"""The one exception users see: a bad scenario, profile or trace, reported in one line."""


class ConfigError(ValueError):
    """Bad user input (scenario, override, profile, trace). The CLI prints it and exits 2."""
