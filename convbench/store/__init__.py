"""What is kept: result records, the JSONL results file, the environment and platform
fingerprint, accuracy baselines."""
