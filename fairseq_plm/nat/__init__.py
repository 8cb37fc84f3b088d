"""Non-autoregressive machinery shared by the NAT methods (SGA, the CTC-NAT baseline):
CTC loss and batched collapse, Mask-Predict masking schedules, denoising noise."""
