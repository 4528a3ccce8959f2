"""Generated from schemas/loom/v1 by `make proto`; do not edit."""
