"""The ``rtdub`` command line."""
