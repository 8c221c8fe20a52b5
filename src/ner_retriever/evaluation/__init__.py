"""Zero-shot evaluation: the paper's protocol, baselines, the layer probe."""
