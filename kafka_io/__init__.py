"""Kafka helpers every process shares, below the worker: offsets, topics, paced publishing.

``offsets``: where a consumer group stands, partition ends, reading a range of records; ``topics``:
creating and checking the deployment's topics; ``pacing``: publishing at a rate or in real time, and
the default partitioner. (Not named ``kafka``: that is kafka-python's package.)
"""
