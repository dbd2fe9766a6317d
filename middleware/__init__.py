"""edujobs' Dramatiq middleware: one class per module, configured by ``brokers.setup``.

Nothing is imported here so that one small module (``middleware.scrubbing``, used by
``brokers.dlq``) can be imported without the heavy dependencies of the others.
"""
