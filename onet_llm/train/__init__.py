"""Fine-tuning the embedding model: `splits` (seeded, grouped splits of labelled data), `data`
(training pairs and hard negatives), `trainer` (the sentence-transformers run) and `card` (what
is saved beside the weights)."""
