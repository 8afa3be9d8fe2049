"""The metalic application: the ``metalic`` command and ``metalic serve``.

It sits on top of every other package (codec, training, bench, service,
worker) and nothing imports it.
"""
