"""The harness's built-in plugins (installed as the ``harness_plugins`` package).

Each module is an ordinary plugin registered through the ``harness`` entry-point
group of the harness distribution, exactly like a third-party plugin.
"""
