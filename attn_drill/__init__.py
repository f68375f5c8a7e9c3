"""attn-drill: interview drills on Transformer attention."""

__version__ = "0.1.0"
