"""The README's LoRA recipe, saved and reloaded with PEFT's defaults: a classifier built from an MLM checkpoint gets
new head weights (pooling, norm, linear), which PEFT's SEQ_CLS task saves only when they are under `classifier`."""

import pytest
import torch
from conftest import tiny_config
from transformers import AutoModelForSequenceClassification

from concept_encoder.modeling_concept_encoder import ConceptEncoderForMaskedLM

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "wi", "wo"]  # the README's recipe


@pytest.mark.parametrize("head", ["pooled", "via_decoder", "sentence_pair"])
def test_lora_adapter_reloads_onto_a_fresh_base_to_equal_logits(tmp_path, head):
    from peft import LoraConfig, PeftModel, get_peft_model

    torch.manual_seed(0)
    ConceptEncoderForMaskedLM(tiny_config()).save_pretrained(tmp_path / "mlm")

    def base():
        return AutoModelForSequenceClassification.from_pretrained(tmp_path / "mlm", num_labels=3, classifier_head=head)

    model = get_peft_model(base(), LoraConfig(task_type="SEQ_CLS", target_modules=LORA_TARGETS, r=2))
    # every weight the MLM checkpoint does not have is trained and saved by PEFT (modules_to_save), none frozen at init
    new = {name for name, _ in base().named_parameters() if not name.startswith(("encoder.", "decoder."))}
    trained = {
        name.removeprefix("base_model.model.").replace("modules_to_save.default.", "")
        for name, parameter in model.named_parameters()
        if parameter.requires_grad and "lora_" not in name
    }
    assert trained == new
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 200, (4, 9), generator=generator)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if head == "sentence_pair":
        inputs.update(input_ids_b=ids.flip(1), attention_mask_b=torch.ones_like(ids))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(3):  # a few steps, so every trainable weight moves off its initial value
        model(**inputs, labels=torch.tensor([0, 1, 2, 0])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(tmp_path / "adapter")

    torch.manual_seed(123)  # another seed: a head weight that was not saved comes back different
    reloaded = PeftModel.from_pretrained(base(), tmp_path / "adapter").eval()
    with torch.no_grad():
        expected, got = model.eval()(**inputs).logits, reloaded(**inputs).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
