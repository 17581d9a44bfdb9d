"""Distillation: convert any trained representation into any other (``fieldkit distill``)."""
