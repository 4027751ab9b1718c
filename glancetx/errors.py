"""
Errors that cross module boundaries.
"""


class ConfigError(Exception):
    """
    A bad or unknown configuration option.  The message names the option and
    is printed as one line at start-up, without a traceback.
    """
