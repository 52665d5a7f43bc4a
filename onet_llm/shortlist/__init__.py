"""Stage 1, always on: `text` (what of a posting the encoder reads), `encoder` (the shipped or
a fine-tuned sentence-transformers model) and `index` (the cached FAISS index over occupation
representations that returns each posting's shortlist)."""
