"""The plugin system: the registry of samplers, models and metrics, and the pluggy manager
that loads built-in and third-party plugins through one door. The hook specifications
(`harness.hookspecs`) and the conformance kit (`harness.testing`) belong to this layer but
keep their public paths at the top of the package.

Layer 4. It may import the metrics, models and core layers.
"""
