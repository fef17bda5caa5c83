"""The bottom layer: settings, metrics and the error base, imported by every other layer.

Nothing here imports from `operators`' callers (`state`, `connectors`, `flows`)
or from the `omnipulse` app package on top.
"""
