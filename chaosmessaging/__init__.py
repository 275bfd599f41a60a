"""chaosmessaging: a Chaos Toolkit extension for real-time messaging platforms."""

__version__ = "0.1.0"
