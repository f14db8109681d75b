"""Task losses and metrics, each with the likelihood that ``UncertaintyWeighting`` should use."""
