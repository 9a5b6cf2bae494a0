"""wenet-echat: a recipe toolkit for empathetic end-to-end spoken chatbots (OSUM-EChat)."""

__version__ = "0.1.0"
