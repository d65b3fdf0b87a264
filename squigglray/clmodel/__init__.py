"""CLModel (seed 003): encoder -> residual VQ -> conditioning -> ReasonerV2 -> UnifiedDecoder."""
