"""Language models: registering, loading (quantized or not), devices, hook points."""
