"""The gRPC bridge (``loom.v1.Bridge``) that lets agents in other processes join the bus.

Its service, client and codec arrive with the bridge issue; the package exists now so the
distribution's layout (``loomk``, ``loomk_bridge``, ``loomk_audio``) is fixed from the start.
"""
