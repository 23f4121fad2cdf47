"""Omnipipe: real-time omnichannel personalization on Kafka and Faust."""

__version__ = "0.1.0"
