"""Gateware: Amaranth components of the accelerator."""
