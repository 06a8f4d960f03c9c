"""Reconstruction: parameters (nn.Module), the forward model, losses, constraints with
schedules, batching and the engine. (Planned: issue 5.)"""
