"""Training: the base variable-rate model, meta fine-tuning, bias bank.

Never imported by service/ or worker/.
"""
