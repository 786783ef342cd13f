"""Text datasets and their tokenized sequences."""
