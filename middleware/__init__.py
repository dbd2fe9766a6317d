"""edujobs' Dramatiq middleware: one class per module, configured by ``brokers.setup``.

Nothing is imported here so that a producer can import one small module (``middleware.signatures``)
without the heavy dependencies of the others.
"""
