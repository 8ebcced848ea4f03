"""Kafka I/O, the detector service and the command line."""
