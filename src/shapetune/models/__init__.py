"""Models: the registry of shape models (VAE, Ladder VAE, AE, latent classifier)."""
