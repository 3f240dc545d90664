"""
Training parts for Janus-Pro, one role per module (import them directly; nothing here is imported eagerly):

- `training.data`: load the three data kinds (`load_samples`), encode a record into the training batch contract
  (`JanusProSampleEncoder`), cache VQ codes of generation images on disk (`VQCodeCache`) and find bad samples up
  front (`find_bad_samples`, `check_samples`).
- `training.collator`: `JanusProDataCollator`, right-padded or packed batches, and packing efficiency.
- `training.mixing`: `RatioMixer`, the deterministic per-step mix of the kinds, sharded over ranks and
  micro-batches.
"""
