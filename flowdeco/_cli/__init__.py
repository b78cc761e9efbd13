"""The ``flowdeco`` command line: ``run``, ``graph``, ``runs``, ``why``, ``cache``.

``_main.main`` is the entry point of the ``flowdeco`` script and of ``python -m flowdeco``;
each command lives in a module of its own.
"""
