"""Model stages: detector, region encoder, text encoder, alignment, caption generator."""
