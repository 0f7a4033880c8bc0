"""sentence-transformers pooling for concept encoders, shipped with checkpoints that sentence-transformers loads.

A concept encoder's `last_hidden_state` is `[batch, concepts, hidden]`: one state per **concept**, not per token. The
stock `Pooling` module applies the token attention mask to that axis whenever the padded length happens to equal the
number of concepts, so the same sentence gets another embedding in another batch. `ConceptMeanPooling` takes the
mean over the concepts and never looks at the token mask (padding is already masked inside the encoder's
cross-attention): the package's zero-shot sentence embedding, independent of the batch.
"""

import os
import shutil

from sentence_transformers.base.modules import Module


class ConceptMeanPooling(Module):
    """`features["token_embeddings"]` (the final concept states) → `features["sentence_embedding"]`, their mean."""

    config_keys = ["embedding_dimension"]

    def __init__(self, embedding_dimension: int):
        super().__init__()
        self.embedding_dimension = embedding_dimension

    def forward(self, features: dict, **kwargs) -> dict:
        concepts = features["token_embeddings"]  # [batch, concepts, hidden]
        features["sentence_embedding"] = concepts.mean(dim=1)  # [batch, hidden]
        return features

    def get_sentence_embedding_dimension(self) -> int:
        return self.embedding_dimension

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        """The config into this module's folder (`1_ConceptMeanPooling`), and this file into the model folder above
        it: `modules.json` names the class `concept_pooling.ConceptMeanPooling`, which sentence-transformers looks
        up in the model folder itself, so a saved model loads without this package (sentence-transformers copies a
        custom module's file only into the module's folder, and not at all when the class is imported locally)."""
        self.save_config(output_path)
        model_folder = os.path.dirname(os.path.normpath(output_path))
        target = os.path.join(model_folder, os.path.basename(__file__))
        if not os.path.isfile(target) or not os.path.samefile(__file__, target):
            shutil.copy(__file__, target)


# sentence-transformers' `save` writes `type(module).__module__` into modules.json. A checkpoint folder holds this file
# as `concept_pooling.py` (`save` above), so the installed package's class carries that name: a reader of the folder
# without this package could not import `concept_encoder.concept_pooling`.
if __name__ == "concept_encoder.concept_pooling":
    ConceptMeanPooling.__module__ = "concept_pooling"
