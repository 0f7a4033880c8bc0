"""Training helpers of concept-encoder: the Trainer subclass, GLUE data and metrics, the experiment registry, Hub checks,
the offline tokenizer, concept diagnostics and run metadata. The model itself lives in the two top-level files that ship
to the Hub."""
