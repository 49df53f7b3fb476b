"""What runs the pieces: the local Kafka launcher (``kafka/``) and the worker as a child process.

The Dockerfile and the ClickHouse and Grafana server configs live beside them. Nothing here imports
the rest of the project: the replay rebuild, the demo and the tests all start processes through it.
"""
