"""Pure PyTorch learning code: estimators, losses, the update step, model helpers. Never imports ray."""
