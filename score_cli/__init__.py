"""score: SCoRe (Kumar et al., 2024) self-correction training and evaluation on TRL."""

__version__ = "0.1.0"
