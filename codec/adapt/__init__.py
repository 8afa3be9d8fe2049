"""Encoder-side adaptation stages (the decoder never changes): rate search and
control (M7), latent refinement (M1), λ_k adaptation (M4), bias-cluster search (M6)."""
