"""ilinkbot's bot layer: pushes, handlers, the receive loop, schedules, the CLI and the gateway.

The public names are re-exported from :mod:`ilinkbot`; this package imports nothing on its
own so that ``ilinkbot`` (the CLI) starts fast.
"""
