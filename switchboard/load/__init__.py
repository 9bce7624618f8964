"""``switchboard load``: many lightweight Twilio callers against a running stack, and what they measured.

Modules, one job each: ``scenario`` (scripted conversations from real speech clips), ``target``
(where to call, within bounds, and how a stream is opened), ``caller`` (one call, measured on the
client side), ``procs`` (the local stack's processes and their CPU), ``frames`` (frames consumed by
the turns workers), ``report`` (percentiles, JSON, baseline thresholds), ``plot`` (the PNG), ``run``
(ramp, duration, progress) and ``command`` (the CLI).
"""
