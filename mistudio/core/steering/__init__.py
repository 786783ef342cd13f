"""Steering the model with SAE features: interventions, side-by-side generation, presets."""
