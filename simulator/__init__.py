"""A deterministic generator of the Thanh Hóa business registry and cash-register invoice feed.

``reference`` (the model's numbers) → ``model`` (analytic counts and volumes) → ``population``
(the businesses) → ``scenarios`` (changes and their ground truth) → ``engine`` (the feed, day by
day, in arrival order) → ``encoding`` (Avro in bulk) → ``archive`` (container files) or
``publish`` (Kafka). ``cli`` is the ``einvoice-monitor simulate`` command. See README.md.
"""
