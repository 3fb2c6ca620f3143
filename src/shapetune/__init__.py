"""ShapeTune: tune and clinically evaluate deep generative 3D shape models of the heart."""

__version__ = "0.1.0"
