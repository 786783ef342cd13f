"""Activation sets: extraction, the chunked store, massive-token flags, quantization faithfulness."""
