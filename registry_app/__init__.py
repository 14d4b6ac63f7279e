"""registry-app: a node registry for fleets of services, on Faust."""

__version__ = "0.1.0"
