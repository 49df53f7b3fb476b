"""The contracts every producer and consumer of the feed shares, below the worker.

``codec``: Avro with the Confluent wire frame over the schemas of ``schemas/``; ``validation``: what a
valid invoice and registration are, and the reasons a record is rejected; ``registry``: decoding the
business registry's records into versions; ``records``: a Kafka record as the pipeline needs it. The
worker (``streams``), the simulator and replay use them alike; none of them imports another for these.
"""
