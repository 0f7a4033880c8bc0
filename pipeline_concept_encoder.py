"""`pipeline("text-classification")` for separately encoded sentence pairs, shipped with pair checkpoints.

The sentence-pair classifier (`classifier_head="sentence_pair"`) encodes each sentence on its own (`input_ids`,
`input_ids_b`), which the stock text-classification pipeline cannot feed: it tokenizes a pair as one `[A; SEP; B]`
sequence. This pipeline tokenizes the two sides separately and keeps everything else (labels, scores, `top_k`,
`function_to_apply`) of the stock one. A pair checkpoint names it in `config.custom_pipelines`, so that

    pipeline("text-classification", model=path, trust_remote_code=True)({"text": a, "text_pair": b})

works. Imports only transformers.
"""

from transformers import TextClassificationPipeline

PAIR_PIPELINE = {
    "text-classification": {
        "impl": "pipeline_concept_encoder.ConceptEncoderPairClassificationPipeline",
        "pt": ["AutoModelForSequenceClassification"],
        "type": "text",
    }
}


class ConceptEncoderPairClassificationPipeline(TextClassificationPipeline):
    """Text classification of a sentence pair whose sides are tokenized (and truncated) separately."""

    def preprocess(self, inputs, **tokenizer_kwargs):
        if isinstance(inputs, dict) and inputs.get("text_pair") is not None:
            first, second = inputs["text"], inputs["text_pair"]
        elif isinstance(inputs, (list, tuple)) and len(inputs) == 1 and len(inputs[0]) == 2:  # [[a, b]], as stock
            first, second = inputs[0]
        else:
            raise ValueError(
                "This checkpoint classifies sentence pairs (each sentence encoded separately): call the pipeline "
                'with {"text": "first sentence", "text_pair": "second sentence"}.'
            )
        options = dict(return_tensors="pt", truncation=True, return_token_type_ids=False, **tokenizer_kwargs)
        encoded_a, encoded_b = self.tokenizer(first, **options), self.tokenizer(second, **options)
        return {
            "input_ids": encoded_a["input_ids"],
            "attention_mask": encoded_a["attention_mask"],
            "input_ids_b": encoded_b["input_ids"],
            "attention_mask_b": encoded_b["attention_mask"],
        }
