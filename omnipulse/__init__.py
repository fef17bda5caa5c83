"""omnipulse: a real-time engine for omnichannel retail CRM.

The engine's code lives in four packages, one per concern:

- ``operators``  pure business logic (RFM, segments, tiers, event-time clock)
- ``state``      everything that touches Redis (key layout, Lua scripts, batches)
- ``connectors`` Kafka sources and sinks, event contract, file replay, launchers
- ``flows``      Bytewax dataflows wiring the three together

This package holds what spans them: settings, errors, the CLI, the simulator.
"""

__version__ = "0.1.0"
