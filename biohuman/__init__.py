"""biohuman: motion capture -> OpenSim muscle activations -> video dataset -> learned models."""

__version__ = "0.1.0"
