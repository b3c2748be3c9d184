"""Human preference labels (RLHF's humans): the sqlite label store, agreement statistics,
export policies for reward-model training and the RLVR/RLHF/RLAIF method advisor. Pure Python."""
