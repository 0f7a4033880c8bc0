"""What a user of the Hugging Face stack brings: pipelines on a fine-tuned pair checkpoint, tokenizer limits, Hub card
metadata read back with `ModelCard.load`, GLUE-format predictions, and transformers' own command-line flags."""

import configparser
import json
import re
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT, run_isolated, tiny_config
from huggingface_hub import ModelCard
from transformers import AutoTokenizer, HfArgumentParser, TrainingArguments, pipeline

from concept_encoder import run_glue, run_pretraining
from concept_encoder.model_cards import write_model_card
from concept_encoder.modeling_concept_encoder import ConceptEncoderForMaskedLM, ConceptEncoderForSequenceClassification

POSITIONS = 64
TRAIN, DEV, TEST = 32, 24, 20
SCORED = 20  # --max_eval_samples: the first 20 of the 24 dev pairs


@pytest.fixture(scope="module")
def paws_dir(tmp_path_factory, data_dir):
    """PAWS in the classic GLUE layout: train and dev cut from the shared dev split, test.tsv from its test split."""
    folder = tmp_path_factory.mktemp("glue") / "paws"
    folder.mkdir()
    header, *dev = (data_dir / "paws" / "dev.tsv").read_text(encoding="utf-8").splitlines()
    _, *test = (data_dir / "paws" / "test.tsv").read_text(encoding="utf-8").splitlines()
    for name, rows in (("train", dev[:TRAIN]), ("dev", dev[TRAIN : TRAIN + DEV]), ("test", test[:TEST])):
        (folder / f"{name}.tsv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return folder.parent


@pytest.fixture(scope="module")
def pair_run(tmp_path_factory, tokenizer, paws_dir):
    """A tiny checkpoint fine-tuned on PAWS with separate pair encoding (one epoch of 2 steps, saved as
    `checkpoint-2` too), with predictions for test.tsv."""
    checkpoint = tmp_path_factory.mktemp("checkpoint") / "tiny_posonly"
    ConceptEncoderForMaskedLM(tiny_config(decoder_query="position", vocab_size=len(tokenizer))).save_pretrained(
        checkpoint
    )
    tokenizer.save_pretrained(checkpoint)  # model_max_length 1e30, as a freshly trained tokenizer has
    output_dir = tmp_path_factory.mktemp("paws_run")
    run_glue.main(
        [
            "--model_name_or_path", str(checkpoint), "--task_name", "paws", "--data_dir", str(paws_dir),
            "--output_dir", str(output_dir), "--max_seq_length", str(POSITIONS), "--num_train_epochs", "1",
            "--max_eval_samples", str(SCORED),
            "--per_device_train_batch_size", "16", "--save_strategy", "epoch", "--registry_file", "",
            "--report_to", "none", "--disable_tqdm", "true", "--do_train", "--do_eval", "--do_predict",
        ]
    )  # fmt: skip
    return output_dir


def test_saved_tokenizer_carries_the_position_limit(pair_run):
    tokenizer = AutoTokenizer.from_pretrained(pair_run, trust_remote_code=True)
    assert tokenizer.model_max_length == POSITIONS
    assert len(tokenizer("word " * 500, truncation=True)["input_ids"]) == POSITIONS


def test_text_classification_pipeline_on_a_pair_checkpoint(pair_run, paws_dir):
    config = json.loads((pair_run / "config.json").read_text())
    assert config["architectures"] == ["ConceptEncoderForSequenceClassification"]
    assert config["classifier_head"] == "sentence_pair"
    assert (pair_run / "pipeline_concept_encoder.py").is_file() and "text-classification" in config["custom_pipelines"]
    classify = pipeline("text-classification", model=str(pair_run), trust_remote_code=True)
    first, second = "The cat sat on the mat .", "A cat was sitting on the mat ."
    (result,) = classify([{"text": first, "text_pair": second}])
    assert result["label"] in ("not_paraphrase", "paraphrase") and 0.5 <= result["score"] <= 1.0
    # the pipeline's probability is the model's own on separately encoded sides
    model, tokenizer = classify.model, classify.tokenizer
    a, b = tokenizer(first, return_tensors="pt"), tokenizer(second, return_tensors="pt")
    with torch.no_grad():
        logits = model(a["input_ids"], a["attention_mask"], b["input_ids"], b["attention_mask"]).logits
    assert result["score"] == pytest.approx(logits.softmax(-1).max().item(), abs=1e-6)
    long = classify({"text": "word " * 500, "text_pair": second})  # truncated to the positions, no crash
    assert long["label"] in ("not_paraphrase", "paraphrase")
    with pytest.raises(ValueError, match="text_pair"):
        classify(first)


SENTENCES = ["The cat sat .", "A much longer sentence with many more words than the first one has .", "Dogs run ."]


def test_every_folder_of_a_run_is_a_sentence_transformers_folder_with_its_pipeline(pair_run):
    """The output folder and its `checkpoint-2` both name the pair pipeline and ship its file, and both load in
    sentence-transformers with concept mean pooling (not the stock token `Pooling`), the same vector in any batch."""
    from sentence_transformers import SentenceTransformer

    for folder in (pair_run, pair_run / "checkpoint-2"):
        config = json.loads((folder / "config.json").read_text())
        assert "text-classification" in config["custom_pipelines"], folder
        assert (folder / "pipeline_concept_encoder.py").is_file() and (folder / "concept_pooling.py").is_file()
        modules = json.loads((folder / "modules.json").read_text())
        assert [module["type"] for module in modules][1] == "concept_pooling.ConceptMeanPooling"
        model = SentenceTransformer(str(folder), trust_remote_code=True)
        assert type(model[1]).__name__ == "ConceptMeanPooling" and model.max_seq_length == POSITIONS
        alone = model.encode(SENTENCES[:1], convert_to_tensor=True)
        batched = model.encode(SENTENCES, convert_to_tensor=True)
        torch.testing.assert_close(alone[0], batched[0], atol=1e-5, rtol=1e-4)


# Runs in a fresh process that cannot import this repository: loads argv[1] as a pair classifier, saves it again to
# argv[2] and classifies a pair with the re-saved folder's own pipeline.
RESAVE_PAIR = """
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

source, target = sys.argv[1], sys.argv[2]
AutoModelForSequenceClassification.from_pretrained(source, trust_remote_code=True).save_pretrained(target)
AutoTokenizer.from_pretrained(source, trust_remote_code=True).save_pretrained(target)
assert os.path.isfile(os.path.join(target, "pipeline_concept_encoder.py")), os.listdir(target)
classify = pipeline("text-classification", model=target, trust_remote_code=True)
print(classify({"text": "The cat sat .", "text_pair": "A cat sat ."})["label"])
"""


def test_every_save_path_writes_the_pipeline_file_its_config_names(pair_run, tmp_path):
    """`save_pretrained` of a loaded pair classifier (this package's class, and the checkpoint's own code in a fresh
    process) and of a merged PEFT model keep `pipeline_concept_encoder.py`, so the re-saved folder's pipeline loads."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(pair_run)
    model.save_pretrained(tmp_path / "resaved")
    lora = LoraConfig(task_type="SEQ_CLS", target_modules=["q_proj", "v_proj"], r=2)
    get_peft_model(model, lora).merge_and_unload().save_pretrained(tmp_path / "merged")
    for folder in (tmp_path / "resaved", tmp_path / "merged"):
        assert (folder / "pipeline_concept_encoder.py").is_file(), sorted(p.name for p in folder.iterdir())
    label = run_isolated(RESAVE_PAIR, pair_run, tmp_path / "isolated", cwd=tmp_path).split()[-1]
    assert label in ("not_paraphrase", "paraphrase")


# Runs in a fresh process that cannot import this repository: loads each folder of argv[1:] with sentence-transformers
# and prints its embeddings of SENTENCES as JSON.
ENCODE_SAVED = """
import json

from sentence_transformers import SentenceTransformer

assert importlib.util.find_spec("concept_pooling") is None
sentences = json.loads(sys.argv[1])
print(json.dumps([SentenceTransformer(f, trust_remote_code=True).encode(sentences).tolist() for f in sys.argv[2:]]))
"""


def test_a_folder_saved_by_sentence_transformers_loads_without_this_package(tmp_path, tokenizer):
    """`SentenceTransformer.save` of a model loaded from a checkpoint (the pooling class from the folder's own code)
    and of one built from this package's modules writes `concept_pooling.py` where its `modules.json` looks for it:
    both load in a fresh process that cannot import this repository, to the same embeddings."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer

    from concept_encoder.concept_pooling import ConceptMeanPooling
    from concept_encoder.training.ecosystem import add_sentence_transformers

    checkpoint = tmp_path / "checkpoint"
    ConceptEncoderForMaskedLM(tiny_config(decoder_query="position", vocab_size=len(tokenizer))).save_pretrained(
        checkpoint
    )
    tokenizer.save_pretrained(checkpoint)
    add_sentence_transformers(checkpoint)
    loaded = SentenceTransformer(str(checkpoint), trust_remote_code=True)
    options = {"trust_remote_code": True}
    transformer = Transformer(str(checkpoint), model_kwargs=options, config_kwargs=options, processor_kwargs=options)
    built = SentenceTransformer(modules=[transformer, ConceptMeanPooling(transformer.get_embedding_dimension())])
    expected = []
    for name, model in (("loaded", loaded), ("built", built)):
        model.save(str(tmp_path / name))
        assert (tmp_path / name / "concept_pooling.py").is_file()
        expected.append(model.encode(SENTENCES))
    output = run_isolated(ENCODE_SAVED, json.dumps(SENTENCES), tmp_path / "loaded", tmp_path / "built", cwd=tmp_path)
    encoded = json.loads(output.splitlines()[-1])
    for vectors, reference in zip(encoded, expected):
        torch.testing.assert_close(torch.tensor(vectors), torch.from_numpy(reference), atol=1e-5, rtol=1e-4)


def test_a_classification_run_records_its_majority_class_level(pair_run, paws_dir):
    """What always predicting the most frequent training label scores on the dev set: the plots' dotted level."""
    labels = {name: [line.split("\t")[-1] for line in (paws_dir / "paws" / f"{name}.tsv").read_text().splitlines()[1:]]
              for name in ("train", "dev")}  # fmt: skip
    majority = max(set(labels["train"]), key=labels["train"].count)
    summary = json.loads((pair_run / "run_summary.json").read_text())
    assert summary["majority_scores"] == {"accuracy": pytest.approx(labels["dev"][:SCORED].count(majority) / SCORED)}


def test_do_predict_writes_glue_format_predictions(pair_run, paws_dir):
    lines = (pair_run / "predict_results_paws.txt").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 1 + TEST
    ids = [line.split("\t")[0] for line in (paws_dir / "paws" / "test.tsv").read_text().splitlines()[1:]]
    assert [line.split("\t")[0] for line in lines[1:]] == ids
    assert {line.split("\t")[1] for line in lines[1:]} <= {"0", "1"}


def test_card_metadata_reads_back_with_model_card_load(pair_run):
    card = ModelCard.load(pair_run / "README.md")
    data = card.data
    assert data.license == "apache-2.0" and data.language == ["en"] and data.pipeline_tag == "text-classification"
    results = {result.metric_type: result for result in data.eval_results}
    metrics = json.loads((pair_run / "eval_results.json").read_text())
    assert set(results) == {"accuracy"}  # PAWS's one metric
    assert results["accuracy"].metric_value == pytest.approx(metrics["eval_accuracy"])
    assert results["accuracy"].dataset_type == "google-research-datasets/paws"
    assert results["accuracy"].dataset_split == f"validation[:{SCORED}]"  # only part of the dev set was scored
    assert "google-research-datasets/paws" in data.datasets
    assert (
        f"| Training examples | {TRAIN} |" in card.text and f"| Dev examples scored | {SCORED} of {DEV} |" in card.text
    )
    assert "| Class | `ConceptEncoderForSequenceClassification` (classifier_head=sentence_pair) |" in card.text


def test_card_snippets_run_without_a_prompt(pair_run):
    """Every Python block of the card, run in the checkpoint folder with no terminal: nothing asks `[y/N]`."""
    blocks = re.findall(r"```python\n(.*?)```", (pair_run / "README.md").read_text(), flags=re.S)
    assert len(blocks) == 2
    result = subprocess.run(
        [sys.executable, "-c", "\n".join(blocks)],
        cwd=pair_run,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[y/N]" not in result.stdout + result.stderr


def test_card_of_a_hub_fine_tune_names_its_base_model(tmp_path):
    ConceptEncoderForSequenceClassification(tiny_config(classifier_head="sentence_pair")).save_pretrained(tmp_path)
    path = write_model_card(tmp_path, {"run_id": "glue_mrpc_x"}, base_model="someone/concept-encoder-base")
    data = ModelCard.load(path).data
    assert data.base_model == "someone/concept-encoder-base" and data.eval_results is None
    assert data.pipeline_tag is None  # no custom pipeline in this folder: the card does not claim one
    assert data.datasets is None  # neither "n/a" nor a local file is a Hub dataset


def test_evaluate_is_not_a_requirement():
    """`evaluate.load` fetches metric scripts from the Hub; GLUE metrics come from scikit-learn and scipy."""
    setup = configparser.ConfigParser()
    setup.read(REPO_ROOT / "setup.cfg")
    requirements = [line.split(">")[0].strip() for line in setup["options"]["install_requires"].split("\n") if line]
    assert "evaluate" not in requirements
    imported = subprocess.run(
        ["git", "grep", "-lE", r"^\s*(import|from) evaluate\b", "--", "*.py"], cwd=REPO_ROOT, capture_output=True
    )
    assert imported.stdout == b""


def test_tensorboard_reporting_is_an_extra_and_documented():
    setup = configparser.ConfigParser()
    setup.read(REPO_ROOT / "setup.cfg")
    assert "tensorboard" in setup["options.extras_require"]["tensorboard"]
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert '-e ".[tensorboard]"' in readme and "--report_to tensorboard" in readme


# ----------------------------------------------------------------------------------------------------------------------
# transformers' command lines
# ----------------------------------------------------------------------------------------------------------------------

RUN_MLM_FLAGS = [  # transformers' examples/pytorch/language-modeling/run_mlm.py, with a value where one is needed
    ["--model_name_or_path", "x"], ["--config_overrides", "hidden_size=64"], ["--config_name", "x"],
    ["--tokenizer_name", "x"], ["--cache_dir", "x"], ["--use_fast_tokenizer", "true"], ["--model_revision", "v1"],
    ["--token", "hf_x"], ["--trust_remote_code"], ["--torch_dtype", "bfloat16"], ["--low_cpu_mem_usage"],
    ["--dataset_name", "x"], ["--dataset_config_name", "x"], ["--train_file", "x.txt"],
    ["--validation_file", "x.txt"], ["--overwrite_cache"], ["--validation_split_percentage", "5"],
    ["--max_seq_length", "64"], ["--preprocessing_num_workers", "2"], ["--mlm_probability", "0.2"],
    ["--line_by_line"], ["--pad_to_max_length"], ["--max_train_samples", "8"], ["--max_eval_samples", "8"],
    ["--streaming"], ["--overwrite_output_dir"],
]  # fmt: skip
RUN_GLUE_FLAGS = [  # transformers' examples/pytorch/text-classification/run_glue.py
    ["--model_name_or_path", "x"], ["--config_name", "x"], ["--tokenizer_name", "x"], ["--cache_dir", "x"],
    ["--use_fast_tokenizer", "true"], ["--model_revision", "v1"], ["--token", "hf_x"], ["--trust_remote_code"],
    ["--ignore_mismatched_sizes"], ["--task_name", "mrpc"], ["--dataset_name", "x"], ["--dataset_config_name", "x"],
    ["--max_seq_length", "64"], ["--overwrite_cache"], ["--pad_to_max_length"], ["--max_train_samples", "8"],
    ["--max_eval_samples", "8"], ["--max_predict_samples", "8"], ["--train_file", "x.csv"],
    ["--validation_file", "x.csv"], ["--test_file", "x.csv"], ["--overwrite_output_dir"], ["--do_predict"],
]  # fmt: skip


def parse(script, argv):
    dataclasses = [cls for cls in vars(script).values() if isinstance(cls, type) and cls.__name__.endswith("Arguments")]
    parser = HfArgumentParser([cls for cls in dataclasses if cls.__module__ == script.__name__] + [TrainingArguments])
    return parser.parse_args(argv)  # argparse: exits (SystemExit) on an unknown or ambiguous flag


@pytest.mark.parametrize("flag", RUN_MLM_FLAGS, ids=lambda flag: flag[0])
def test_run_mlm_flags_are_known_to_run_pretraining(flag):
    parsed = parse(run_pretraining, ["--output_dir", "x", *flag])
    assert hasattr(parsed, flag[0][2:])


@pytest.mark.parametrize("flag", RUN_GLUE_FLAGS, ids=lambda flag: flag[0])
def test_run_glue_flags_are_known_to_run_glue(flag):
    parsed = parse(run_glue, ["--output_dir", "x", *flag])
    assert hasattr(parsed, flag[0][2:])


def test_flags_without_an_equivalent_are_refused_naming_the_alternative(tmp_path):
    base = ["--model_name_or_path", str(tmp_path), "--task_name", "mrpc", "--output_dir", str(tmp_path)]
    with pytest.raises(ValueError, match="--data_dir.*--train_file"):
        run_glue.main([*base, "--dataset_name", "nyu-mll/glue", "--dataset_config_name", "mrpc"])
    with pytest.raises(ValueError, match="fast tokenizers only"):
        run_glue.main([*base, "--use_fast_tokenizer", "false"])
    with pytest.raises(ValueError, match="fast tokenizers only"):
        run_pretraining.ModelArguments(use_fast_tokenizer=False)


def test_run_mlm_flags_keep_their_meaning(tmp_path, tokenizer):
    """--config_name gives the sizes, --torch_dtype the loaded dtype, --pad_to_max_length padded examples."""
    tiny_config(num_hidden_layers=3).save_pretrained(tmp_path / "config")
    config = run_pretraining.build_config(
        run_pretraining.ModelArguments(config_name=str(tmp_path / "config"), config_overrides="concept_num=4")
    )
    assert (config.num_hidden_layers, config.concept_num, config.hidden_size) == (3, 4, 32)
    ConceptEncoderForMaskedLM(tiny_config(decoder_query="position")).save_pretrained(tmp_path / "checkpoint")
    model_args = run_pretraining.ModelArguments(
        model_type="perceiver_posonly_mlm", model_name_or_path=str(tmp_path / "checkpoint"), torch_dtype="bfloat16"
    )
    model = run_pretraining.build_model(model_args, run_pretraining.build_config(model_args))
    assert model.dtype == torch.bfloat16
    data_args = run_pretraining.DataTrainingArguments(line_by_line=True, pad_to_max_length=True)
    training_args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none")
    from datasets import Dataset, DatasetDict

    raw = DatasetDict(train=Dataset.from_dict({"text": ["a short line", "another one"]}))
    tokenized = run_pretraining.tokenize_datasets(raw, tokenizer, "text", 16, data_args, training_args)
    assert [len(ids) for ids in tokenized["train"]["input_ids"]] == [16, 16]


# ----------------------------------------------------------------------------------------------------------------------
# PEFT, sentence-transformers, ONNX, torch.compile
# ----------------------------------------------------------------------------------------------------------------------


def test_lora_on_every_attention_and_ffn_projection_changes_the_output_and_trains():
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = ConceptEncoderForSequenceClassification(tiny_config(num_labels=2)).eval()
    ids = torch.randint(5, 150, (2, 10))
    before = model(ids).logits
    targets = ["q_proj", "k_proj", "v_proj", "out_proj", "wi", "wo"]
    peft_model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", target_modules=targets, r=4))
    lora_a = {name: p for name, p in peft_model.named_parameters() if "lora_A" in name}
    assert len(lora_a) == 2 * 2 * 4 + 2 * 2  # 2 layers x (2 attentions x 4 projections + FFN wi, wo)
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.1)
    after = peft_model(input_ids=ids).logits
    assert (after - before).abs().max() > 1e-4  # every wrapper runs
    peft_model(input_ids=ids, labels=torch.tensor([0, 1])).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_a.values())


def test_sentence_transformers_encodes_batch_independently_as_the_mean_of_concepts(tmp_path, tokenizer):
    from sentence_transformers import SentenceTransformer

    from concept_encoder.training.ecosystem import add_sentence_transformers
    from concept_encoder.training.zero_shot import load_encoder, sentence_vectors

    ConceptEncoderForMaskedLM(tiny_config(decoder_query="position", vocab_size=len(tokenizer))).save_pretrained(
        tmp_path
    )
    tokenizer.save_pretrained(tmp_path)
    add_sentence_transformers(tmp_path)
    model = SentenceTransformer(str(tmp_path), trust_remote_code=True)
    short, long = "The cat sat .", "A much longer sentence with many more words than the first one has ."
    alone = model.encode([short], convert_to_tensor=True)
    batched = model.encode([short, long, short * 3], convert_to_tensor=True)
    assert torch.allclose(alone[0], batched[0], atol=1e-5)
    with torch.no_grad():  # the package's own zero-shot embeddings (concept_encoder.training.zero_shot)
        expected = sentence_vectors(load_encoder(str(tmp_path)), tokenizer, [short, long, short * 3], max_length=64)
    assert torch.allclose(batched, expected, atol=1e-5)


class OutputGraph(torch.nn.Module):
    """The model with one tensor output, as an exported graph has; the pair head takes both sentences."""

    def __init__(self, model, output: str):
        super().__init__()
        self.model, self.output = model, output

    def forward(self, input_ids, attention_mask, input_ids_b=None, attention_mask_b=None):
        pair = {} if input_ids_b is None else {"input_ids_b": input_ids_b, "attention_mask_b": attention_mask_b}
        return getattr(self.model(input_ids=input_ids, attention_mask=attention_mask, **pair), self.output)


ONNX_HEADS = {  # name: (class, config fields of the head variant, output)
    "encoder": ("ConceptEncoderModel", {}, "last_hidden_state"),
    "weighted_mlm": ("ConceptEncoderForMaskedLM", {"decoder_type": "weighted"}, "logits"),
    "perceiver_mlm": ("ConceptEncoderForMaskedLM", {}, "logits"),
    "perceiver_posonly_mlm": ("ConceptEncoderForMaskedLM", {"decoder_query": "position"}, "logits"),
    "pooled": ("ConceptEncoderForSequenceClassification", {}, "logits"),
    "via_decoder": ("ConceptEncoderForSequenceClassification", {"classifier_head": "via_decoder"}, "logits"),
    "sentence_pair": ("ConceptEncoderForSequenceClassification", {"classifier_head": "sentence_pair"}, "logits"),
}


def padded_batch(size: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(5, 150, (size, length))
    mask = torch.ones_like(ids)
    mask[0, length // 2 :] = 0
    return ids, mask


@pytest.mark.parametrize("head", ONNX_HEADS)
def test_onnx_export_matches_pytorch_with_dynamic_batch_and_length(tmp_path, head):
    import onnxruntime

    from concept_encoder import modeling_concept_encoder

    class_name, variant, output = ONNX_HEADS[head]
    torch.manual_seed(0)
    model = getattr(modeling_concept_encoder, class_name)(tiny_config(**variant)).eval()
    pair = head == "sentence_pair"
    ids = torch.randint(5, 150, (2, 12))
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length", max=POSITIONS)
    inputs, shapes = (ids, torch.ones_like(ids)), ({0: batch, 1: length}, {0: batch, 1: length})
    if pair:
        length_b = torch.export.Dim("length_b", max=POSITIONS)
        inputs += (ids[:, :9].clone(), torch.ones_like(ids[:, :9]))
        shapes += ({0: batch, 1: length_b}, {0: batch, 1: length_b})
    path = tmp_path / f"{head}.onnx"
    names = ["input_ids", "attention_mask", "input_ids_b", "attention_mask_b"][: len(inputs)]
    torch.onnx.export(
        OutputGraph(model, output), inputs, str(path), dynamo=True, dynamic_shapes=shapes,
        input_names=names, output_names=[output],
    )  # fmt: skip
    session = onnxruntime.InferenceSession(str(path))
    assert [node.name for node in session.get_inputs()] == names
    assert [node.name for node in session.get_outputs()] == [output]  # last_hidden_state or logits, not a graph id
    for size, seq in ((1, 5), (3, 30)):  # other shapes than traced, padded rows
        batch_inputs = padded_batch(size, seq) + (padded_batch(size, seq - 2) if pair else ())
        (onnx_out,) = session.run(None, {name: x.numpy() for name, x in zip(names, batch_inputs)})
        with torch.no_grad():
            reference = OutputGraph(model, output)(*batch_inputs)
        assert abs(onnx_out - reference.numpy()).max() < 1e-5
    with pytest.raises(ValueError, match="outside the vocabulary"):  # eager mode keeps its friendly checks
        model(*(torch.tensor([[1, 10_000]]), torch.ones(1, 2, dtype=torch.long)) * (2 if pair else 1))


def test_torch_compile_fullgraph():
    from concept_encoder.modeling_concept_encoder import ConceptEncoderModel

    model = ConceptEncoderModel(tiny_config()).eval()
    ids = torch.randint(5, 150, (2, 12))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        assert torch.allclose(compiled(ids, mask).last_hidden_state, model(ids, mask).last_hidden_state, atol=1e-5)


def test_model_card_names_only_the_fields_that_make_the_head():
    from concept_encoder.model_cards import head_variant

    mlm = {"architectures": ["ConceptEncoderForMaskedLM"], "decoder_type": "perceiver", "decoder_query": "position"}
    assert head_variant(mlm) == "decoder_type=perceiver, decoder_query=position"
    assert head_variant({**mlm, "decoder_type": "weighted"}) == "decoder_type=weighted"  # no queries to set


def test_card_shows_user_text_as_written_never_as_html(tmp_path):
    """Issue 23.6: a run name, a data file name or a machine name reached the card's body as raw HTML."""
    ConceptEncoderForMaskedLM(tiny_config()).save_pretrained(tmp_path)
    summary = {
        "run_id": "<script>alert(1)</script>",
        "pretraining_data": "corpus/<img src=x onerror=alert(1)>|x.txt",
        "machine": "<b>box</b>",
        "wandb": "<a href=javascript:alert(1)>run</a>",
        "concept_losses": "<i>none</i>",
    }
    body = ModelCard.load(
        write_model_card(tmp_path, summary, {"<u>Task</u>": 0.5}, hyperparameters={"<s>Seed</s>": "<em>1</em>"})
    ).text
    for tag in ("<script", "<img", "<b>", "<a ", "<i>", "<u>", "<s>", "<em>"):
        assert tag not in body
    assert "# &lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "| Pretraining data | corpus/&lt;img src=x onerror=alert(1)&gt;\\|x.txt |" in body
