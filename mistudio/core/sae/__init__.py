"""Sparse autoencoders, skip SAEs and transcoders: one interface, one small module per kind."""
