"""concept-encoder: C learned concept vectors read N tokens through cross-attention, as Hugging Face models.

The import package of `pip install concept-encoder` (this repository's root, see setup.cfg): the Hub files
(`concept_encoder.modeling_concept_encoder`, `concept_encoder.configuration_concept_encoder`,
`concept_encoder.pipeline_concept_encoder`, `concept_encoder.concept_pooling`), the collators, the training scripts
(`concept_encoder.run_pretraining`, `concept_encoder.run_glue`, also the console scripts `concept-encoder-pretrain`
and `concept-encoder-glue`) and their helpers (`concept_encoder.training`). Importing the package
imports none of them; import `concept_encoder.modeling_concept_encoder` to register the Auto classes.
"""
