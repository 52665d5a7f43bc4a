"""The light encoder (transformers alone) gives the vectors sentence-transformers gives, so
`label` and `search` can start without importing sentence-transformers."""

from __future__ import annotations

import numpy as np

from onet_llm.shortlist.encoder import Encoder

TEXTS = [
    "Registered Nurse",
    "Forklift Operator - night shift",
    "Staff Accountant. " + "Prepare journal entries, reconcile accounts and close the books. " * 30,
    "",
    "Caf\u00e9 cook",
]


def test_light_and_sentence_transformers_vectors_agree():
    for model in ("default", "base"):
        light = Encoder(model)
        assert light.light
        full = Encoder(model, light=False)
        assert np.abs(light.encode(TEXTS) - full.encode(TEXTS)).max() < 1e-5
