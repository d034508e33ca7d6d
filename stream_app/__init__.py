"""stream_app: real-time recommendations that follow drifting interests."""

__version__ = "0.1.0"
